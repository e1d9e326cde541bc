//! A policy upload that gets through a damaging line: selective repeat over chunks.
//!
//! The begin and the commit are commands ([`DeviceClient::command`]: sent again until
//! acknowledged). Between them, chunks go out a few at a time ([`WINDOW`] in flight); the
//! device acknowledges each with the offset just past it, in any order. A chunk whose
//! acknowledgement does not come within the retransmission timeout (doubled on each resend)
//! is sent again — only that one, cut to the current chunk size. The chunk size follows
//! the losses seen so far ([`super::frame_sizing`]): full 240-value chunks on a clean line,
//! a few dozen values on one that damages one byte in a thousand. Every command is
//! idempotent on the device, so duplicates and late acknowledgements change nothing.
//!
//! The upload gives up (and is begun again, a few times) when no chunk at all has been
//! acknowledged for the retransmission ceiling: the device is gone, or the line carries
//! nothing. On a line that merely damages many frames, acknowledgements keep coming and the
//! upload goes on.

use std::time::{Duration, Instant};

use tether_shared::message::{
    AckTopic, POLICY_CHUNK_VALUES, PolicyUpload, RefusalReason, UploadStep,
};
use tether_shared::{DeviceMessage, PolicySpec};

use super::{DeviceClient, DeviceError};

/// Chunks in flight at once.
pub const WINDOW: usize = 4;

/// Fewest values a chunk is cut down to.
pub const MIN_CHUNK_VALUES: usize = 16;

/// Sends of one chunk's values before the upload is abandoned (and begun again), though
/// other chunks get through: a device that never takes that one.
pub const CHUNK_ATTEMPTS: u32 = 64;

/// Refusals of chunks in a row (the device holding too many separate stretches, or having
/// lost the upload) tolerated before the upload is begun again.
const MAX_CHUNK_REFUSALS: u32 = 16;

/// A stretch of values still to send, and how often it was sent before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stretch {
    start: usize,
    end: usize,
    sends: u32,
}

/// A chunk sent and not yet acknowledged.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    stretch: Stretch,
    /// Send order: a later chunk's acknowledgement means this one's was lost.
    order: u64,
    sent: Instant,
    deadline: Instant,
    bytes: usize,
}

/// Uploads `params` as policy `version` with shape `spec` and commits it.
pub fn upload_policy(
    client: &mut DeviceClient,
    version: u32,
    spec: &PolicySpec,
    params: &[f32],
) -> Result<(), DeviceError> {
    let upload = PolicyUpload::new(version, spec, params);
    let UploadStep { message, ack } = upload.begin();
    client.command(&message, ack, "policy upload (begin)")?;
    send_chunks(client, &upload, version)?;
    let UploadStep { message, ack } = upload.commit();
    client.command(&message, ack, "policy commit")
}

/// Sends every chunk until each is acknowledged.
fn send_chunks(
    client: &mut DeviceClient,
    upload: &PolicyUpload<'_>,
    version: u32,
) -> Result<(), DeviceError> {
    let mut sender = ChunkSender::new(upload.len());
    while !sender.done() {
        // After a refusal, wait for what is in flight before sending more.
        while sender.flying.len() < WINDOW && (!sender.hold || sender.flying.is_empty()) {
            let Some(stretch) = sender.next_chunk(chunk_values(client)) else {
                break;
            };
            let order = sender.next_order;
            sender.next_order += 1;
            sender
                .flying
                .push(send_chunk(client, upload, stretch, order)?);
        }
        let deadline = sender
            .flying
            .iter()
            .map(|f| f.deadline)
            .min()
            .unwrap_or_else(Instant::now);
        match await_chunk_answer(client, version, deadline)? {
            Some(ChunkAnswer::Acked { end }) => sender.acked(client, end)?,
            Some(ChunkAnswer::Refused { start, reason }) => {
                sender.refused(client, start, reason)?
            }
            None => {}
        }
        sender.time_out(client, Instant::now())?;
    }
    Ok(())
}

/// The chunks of one upload: what is still to send, what is in flight.
struct ChunkSender {
    /// Stretches still to send, by start.
    todo: Vec<Stretch>,
    flying: Vec<InFlight>,
    /// Send order of the next chunk.
    next_order: u64,
    /// After a refusal, no chunk goes out until an acknowledgement or a timeout.
    hold: bool,
    refusals_in_a_row: u32,
    started: Instant,
    progress: Instant,
}

impl ChunkSender {
    fn new(len: usize) -> Self {
        let todo = match len {
            0 => Vec::new(),
            end => vec![Stretch {
                start: 0,
                end,
                sends: 0,
            }],
        };
        let now = Instant::now();
        ChunkSender {
            todo,
            flying: Vec::new(),
            next_order: 0,
            hold: false,
            refusals_in_a_row: 0,
            started: now,
            progress: now,
        }
    }

    fn done(&self) -> bool {
        self.todo.is_empty() && self.flying.is_empty()
    }

    /// The next chunk of at most `values` values, from the lowest stretch still to send.
    fn next_chunk(&mut self, values: usize) -> Option<Stretch> {
        let first = self.todo.first_mut()?;
        let end = first.end.min(first.start + values.max(1));
        let chunk = Stretch { end, ..*first };
        first.start = end;
        if first.start >= first.end {
            self.todo.remove(0);
        }
        Some(chunk)
    }

    /// Puts `stretch` back, in order.
    fn requeue(&mut self, stretch: Stretch) {
        let at = self.todo.partition_point(|s| s.start < stretch.start);
        self.todo.insert(at, stretch);
    }

    /// A chunk was lost (or its acknowledgement): send it again, unless it was sent too
    /// often.
    fn lost(&mut self, client: &mut DeviceClient, chunk: InFlight) -> Result<(), DeviceError> {
        client.uplink_errors().add(chunk.bytes, 1);
        let sends = chunk.stretch.sends + 1;
        if sends >= CHUNK_ATTEMPTS {
            return Err(client.no_ack("policy chunk", self.started.elapsed(), sends));
        }
        self.requeue(Stretch {
            sends,
            ..chunk.stretch
        });
        Ok(())
    }

    /// The chunk ending at `end` is stored. The line keeps order, so every chunk sent
    /// before it and not acknowledged was lost (or its acknowledgement was): it goes out
    /// again now rather than after its timeout.
    fn acked(&mut self, client: &mut DeviceClient, end: usize) -> Result<(), DeviceError> {
        let Some(i) = self.flying.iter().position(|f| f.stretch.end == end) else {
            return Ok(()); // a late or repeated acknowledgement
        };
        let done = self.flying.swap_remove(i);
        self.progress = Instant::now();
        self.hold = false;
        self.refusals_in_a_row = 0;
        if done.stretch.sends == 0 {
            client.rtt_mut().sample(done.sent.elapsed());
        }
        client.uplink_errors().add(done.bytes, 0);
        let (earlier, later): (Vec<InFlight>, Vec<InFlight>) =
            self.flying.drain(..).partition(|f| f.order < done.order);
        self.flying = later;
        for chunk in earlier {
            self.lost(client, chunk)?;
        }
        Ok(())
    }

    /// The device refused the chunk starting at `start`. Out of order means it holds too
    /// many separate stretches: the chunk goes back, after those before it.
    fn refused(
        &mut self,
        client: &DeviceClient,
        start: usize,
        reason: RefusalReason,
    ) -> Result<(), DeviceError> {
        self.refusals_in_a_row += 1;
        if self.refusals_in_a_row > MAX_CHUNK_REFUSALS || reason != RefusalReason::OutOfOrder {
            return Err(DeviceError::Refused {
                device: client.name().to_string(),
                what: "policy chunk".to_string(),
                reason,
            });
        }
        if let Some(i) = self.flying.iter().position(|f| f.stretch.start == start) {
            let chunk = self.flying.swap_remove(i);
            self.requeue(chunk.stretch);
        }
        self.hold = true;
        Ok(())
    }

    /// Chunks unanswered past their deadline are sent again; no acknowledgement at all for
    /// the retransmission ceiling ends the upload.
    fn time_out(&mut self, client: &mut DeviceClient, now: Instant) -> Result<(), DeviceError> {
        let (expired, waiting): (Vec<InFlight>, Vec<InFlight>) =
            self.flying.drain(..).partition(|f| f.deadline <= now);
        self.flying = waiting;
        if !expired.is_empty() {
            self.hold = false;
        }
        for chunk in expired {
            self.lost(client, chunk)?;
        }
        if self.progress.elapsed() >= client.config().rto_ceiling {
            let sends = self.flying.iter().map(|f| f.stretch.sends + 1).max();
            return Err(client.no_ack("policy chunk", self.started.elapsed(), sends.unwrap_or(0)));
        }
        Ok(())
    }
}

/// The chunk size the uplink's damage calls for.
fn chunk_values(client: &mut DeviceClient) -> usize {
    client
        .uplink_errors()
        .best_values(MIN_CHUNK_VALUES, POLICY_CHUNK_VALUES)
}

fn send_chunk(
    client: &mut DeviceClient,
    upload: &PolicyUpload<'_>,
    stretch: Stretch,
    order: u64,
) -> Result<InFlight, DeviceError> {
    let (step, _) = upload.chunk_of(stretch.start, stretch.end - stretch.start);
    let sent = Instant::now();
    client.send(&step.message)?;
    // A chunk is the longest frame the host sends (about 1 KB: 87 ms at 115 200 baud), so
    // the round trips measured on short messages underestimate its answer's wait on a slow
    // line; an unanswered chunk therefore backs off without the doubling limit, or its
    // resends would queue faster than the line drains them and no answer would ever come
    // back in time.
    let timeout: Duration = client.backoff(stretch.sends);
    Ok(InFlight {
        stretch,
        order,
        sent,
        deadline: sent + timeout,
        // A chunk frame: its values and about 14 bytes of framing.
        bytes: 4 * (stretch.end - stretch.start) + 14,
    })
}

/// What the device said about a chunk.
enum ChunkAnswer {
    /// The chunk ending at `end` is stored.
    Acked { end: usize },
    /// The chunk starting at `start` was refused.
    Refused { start: usize, reason: RefusalReason },
}

/// Waits until `deadline` for the next answer about a chunk.
fn await_chunk_answer(
    client: &mut DeviceClient,
    version: u32,
    deadline: Instant,
) -> Result<Option<ChunkAnswer>, DeviceError> {
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match client.link_mut().recv(left)? {
            Some(DeviceMessage::Ack(AckTopic::PolicyChunk {
                version: v,
                received,
            })) if v == version => {
                return Ok(Some(ChunkAnswer::Acked {
                    end: received as usize,
                }));
            }
            Some(DeviceMessage::Refused(refusal)) => match refusal.topic {
                AckTopic::PolicyChunk {
                    version: v,
                    received,
                } if v == version => {
                    return Ok(Some(ChunkAnswer::Refused {
                        start: received as usize,
                        reason: refusal.reason,
                    }));
                }
                _ => {}
            },
            Some(DeviceMessage::Log(line)) => {
                tracing::info!(device = %client.name(), "{}", line.text);
            }
            Some(_) | None => {}
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_cut_from_the_lowest_stretch_and_lost_ones_go_back_in_order() {
        let mut sender = ChunkSender::new(100);
        let taken: Vec<(usize, usize)> = std::iter::from_fn(|| sender.next_chunk(40))
            .map(|s| (s.start, s.end))
            .collect();
        assert_eq!(taken, [(0, 40), (40, 80), (80, 100)]);
        assert!(sender.done());
        for (start, end) in [(80, 100), (0, 40)] {
            sender.requeue(Stretch {
                start,
                end,
                sends: 1,
            });
        }
        let again: Vec<(usize, usize, u32)> = std::iter::from_fn(|| sender.next_chunk(16))
            .map(|s| (s.start, s.end, s.sends))
            .collect();
        assert_eq!(
            again,
            [
                (0, 16, 1),
                (16, 32, 1),
                (32, 40, 1),
                (80, 96, 1),
                (96, 100, 1)
            ]
        );
    }
}

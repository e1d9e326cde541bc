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

use std::collections::VecDeque;
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

/// Sends of one chunk's values before the upload is abandoned (and begun again).
pub const CHUNK_ATTEMPTS: u32 = 12;

/// Refusals of chunks (the device holding too many separate stretches, or having lost the
/// upload) tolerated before the upload is begun again.
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
    let mut todo: VecDeque<Stretch> = VecDeque::new();
    if !upload.is_empty() {
        todo.push_back(Stretch {
            start: 0,
            end: upload.len(),
            sends: 0,
        });
    }
    let mut flying: Vec<InFlight> = Vec::new();
    let mut refusals = 0;
    let started = Instant::now();
    while !(todo.is_empty() && flying.is_empty()) {
        while flying.len() < WINDOW
            && let Some(stretch) = next_chunk(&mut todo, chunk_values(client))
        {
            flying.push(send_chunk(client, upload, stretch)?);
        }
        let deadline = flying
            .iter()
            .map(|f| f.deadline)
            .min()
            .unwrap_or_else(Instant::now);
        match await_chunk_answer(client, version, deadline)? {
            Some(ChunkAnswer::Acked { end }) => {
                if let Some(i) = flying.iter().position(|f| f.stretch.end == end) {
                    let done = flying.swap_remove(i);
                    if done.stretch.sends == 0 {
                        client.rtt_mut().sample(done.sent.elapsed());
                    }
                    client.uplink_errors().add(done.bytes, 0);
                }
            }
            Some(ChunkAnswer::Refused { start, reason }) => {
                refusals += 1;
                if refusals > MAX_CHUNK_REFUSALS || reason != RefusalReason::OutOfOrder {
                    return Err(DeviceError::Refused {
                        device: client.name().to_string(),
                        what: "policy chunk".to_string(),
                        reason,
                    });
                }
                // Too many separate stretches on the device: send it after the others.
                if let Some(i) = flying.iter().position(|f| f.stretch.start == start) {
                    todo.push_back(flying.swap_remove(i).stretch);
                }
            }
            None => {}
        }
        let now = Instant::now();
        let mut i = 0;
        while i < flying.len() {
            if flying[i].deadline > now {
                i += 1;
                continue;
            }
            let lost = flying.swap_remove(i);
            client.uplink_errors().add(lost.bytes, 1);
            let stretch = Stretch {
                sends: lost.stretch.sends + 1,
                ..lost.stretch
            };
            if stretch.sends >= CHUNK_ATTEMPTS {
                return Err(client.no_ack("policy chunk", started.elapsed()));
            }
            todo.push_front(stretch);
        }
    }
    Ok(())
}

/// The chunk size the uplink's damage calls for.
fn chunk_values(client: &mut DeviceClient) -> usize {
    client
        .uplink_errors()
        .best_values(MIN_CHUNK_VALUES, POLICY_CHUNK_VALUES)
}

/// Takes the next chunk of at most `values` values off the front of `todo`.
fn next_chunk(todo: &mut VecDeque<Stretch>, values: usize) -> Option<Stretch> {
    let first = todo.front_mut()?;
    let end = first.end.min(first.start + values.max(1));
    let chunk = Stretch { end, ..*first };
    first.start = end;
    if first.start >= first.end {
        todo.pop_front();
    }
    Some(chunk)
}

fn send_chunk(
    client: &mut DeviceClient,
    upload: &PolicyUpload<'_>,
    stretch: Stretch,
) -> Result<InFlight, DeviceError> {
    let (step, _) = upload.chunk_of(stretch.start, stretch.end - stretch.start);
    let sent = Instant::now();
    client.send(&step.message)?;
    let timeout: Duration = client.timeout(stretch.sends);
    Ok(InFlight {
        stretch,
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
    fn chunks_are_cut_from_the_front_stretch() {
        let mut todo = VecDeque::from([
            Stretch {
                start: 0,
                end: 100,
                sends: 1,
            },
            Stretch {
                start: 300,
                end: 310,
                sends: 0,
            },
        ]);
        let taken: Vec<Stretch> = std::iter::from_fn(|| next_chunk(&mut todo, 40)).collect();
        assert_eq!(
            taken
                .iter()
                .map(|s| (s.start, s.end, s.sends))
                .collect::<Vec<_>>(),
            [(0, 40, 1), (40, 80, 1), (80, 100, 1), (300, 310, 0)]
        );
        assert!(todo.is_empty());
    }
}

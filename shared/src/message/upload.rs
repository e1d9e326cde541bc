//! The policy upload, written once: the messages that carry a policy to a device, in order,
//! each with the acknowledgement that confirms it.
//!
//! `PolicyBegin` (version, spec, length, CRC) → `PolicyChunk`s at consecutive offsets, at
//! most [`POLICY_CHUNK_VALUES`] values each → `PolicyCommit`. See `docs/PROTOCOL.md`. The
//! iterator gives the plain in-order sequence; a host on a lossy line picks chunks with
//! [`PolicyUpload::chunk_of`] (any size, any order, again if lost).

use heapless::Vec;

use super::{AckTopic, HostMessage, POLICY_CHUNK_VALUES, PolicyBegin, PolicyChunk};
use crate::frame::PARAMS_CRC;
use crate::policy::PolicySpec;

/// CRC-32 ([`PARAMS_CRC`]) of parameter values as a [`PolicyBegin`] declares it: over the
/// values' little-endian bytes, in wire order.
pub fn params_crc<'a>(values: impl IntoIterator<Item = &'a f32>) -> u32 {
    let mut digest = PARAMS_CRC.digest();
    for value in values {
        digest.update(&value.to_le_bytes());
    }
    digest.finalize()
}

/// One message of an upload and the acknowledgement that confirms it.
#[derive(Clone, Debug, PartialEq)]
pub struct UploadStep {
    /// What to send.
    pub message: HostMessage,
    /// The [`super::DeviceMessage::Ack`] topic that confirms it.
    pub ack: AckTopic,
}

/// The messages uploading `params` (flat, in the shared wire layout) as policy `version`:
/// an iterator of [`UploadStep`]s, begin first, commit last.
#[derive(Clone, Debug)]
pub struct PolicyUpload<'a> {
    version: u32,
    spec: &'a PolicySpec,
    params: &'a [f32],
    next: Next,
}

/// Where a [`PolicyUpload`] stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    Begin,
    /// The chunk starting at this value index.
    Chunk(usize),
    Commit,
    Done,
}

impl<'a> PolicyUpload<'a> {
    /// The upload of `params` for a policy shaped `spec` as version `version`. The length
    /// the begin message declares is `params.len()`: the device refuses it unless that is
    /// `spec.param_count()`.
    pub fn new(version: u32, spec: &'a PolicySpec, params: &'a [f32]) -> Self {
        PolicyUpload {
            version,
            spec,
            params,
            next: Next::Begin,
        }
    }

    /// The messages alone, without their acknowledgements.
    pub fn messages(self) -> impl Iterator<Item = HostMessage> + 'a {
        self.map(|step| step.message)
    }

    /// Number of parameter values uploaded.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// Whether there is no value to upload.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// The begin message and its acknowledgement.
    pub fn begin(&self) -> UploadStep {
        UploadStep {
            message: HostMessage::PolicyBegin(PolicyBegin {
                version: self.version,
                spec: self.spec.clone(),
                len: u32::try_from(self.params.len()).unwrap_or(u32::MAX),
                crc: params_crc(self.params),
            }),
            ack: AckTopic::PolicyBegin {
                version: self.version,
            },
        }
    }

    /// The chunk at `offset` (below `params.len()`) and the offset after it.
    fn chunk(&self, offset: usize) -> (UploadStep, usize) {
        self.chunk_of(offset, POLICY_CHUNK_VALUES)
    }

    /// The chunk of up to `values` values (at most [`POLICY_CHUNK_VALUES`]) at `offset`,
    /// and the offset after it. Chunks may be sent in any order and again: the device
    /// acknowledges each with the offset after it.
    pub fn chunk_of(&self, offset: usize, values: usize) -> (UploadStep, usize) {
        let end = offset
            .saturating_add(values.min(POLICY_CHUNK_VALUES))
            .min(self.params.len());
        let values = self.params.get(offset..end).unwrap_or(&[]);
        // At most POLICY_CHUNK_VALUES values by construction: the copy always fits.
        let values = Vec::from_slice(values).unwrap_or_default();
        let step = UploadStep {
            message: HostMessage::PolicyChunk(PolicyChunk {
                version: self.version,
                offset: offset as u32,
                values,
            }),
            ack: AckTopic::PolicyChunk {
                version: self.version,
                received: end as u32,
            },
        };
        (step, end)
    }
}

impl PolicyUpload<'_> {
    /// The commit message and its acknowledgement.
    pub fn commit(&self) -> UploadStep {
        UploadStep {
            message: HostMessage::PolicyCommit {
                version: self.version,
            },
            ack: AckTopic::PolicyCommit {
                version: self.version,
            },
        }
    }
}

impl Iterator for PolicyUpload<'_> {
    type Item = UploadStep;

    fn next(&mut self) -> Option<UploadStep> {
        let after_chunks = |end: usize, len: usize| match end < len {
            true => Next::Chunk(end),
            false => Next::Commit,
        };
        let (step, next) = match self.next {
            Next::Begin => (self.begin(), after_chunks(0, self.params.len())),
            Next::Chunk(offset) => {
                let (step, end) = self.chunk(offset);
                (step, after_chunks(end, self.params.len()))
            }
            Next::Commit => (self.commit(), Next::Done),
            Next::Done => return None,
        };
        self.next = next;
        Some(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyHead;

    fn spec() -> PolicySpec {
        PolicySpec {
            obs_dim: 3,
            hidden: Vec::from_slice(&[64]).unwrap_or_default(),
            head: PolicyHead::Gaussian { action_dim: 1 },
            normalize_obs: false,
        }
    }

    #[test]
    fn begin_chunks_commit_cover_every_value_once_in_order() {
        let spec = spec();
        let params: [f32; 322] = core::array::from_fn(|i| i as f32 * 0.5);
        assert_eq!(spec.param_count(), params.len());
        let mut upload = PolicyUpload::new(7, &spec, &params);
        let Some(UploadStep {
            message: HostMessage::PolicyBegin(begin),
            ack: AckTopic::PolicyBegin { version: 7 },
        }) = upload.next()
        else {
            panic!("begin first");
        };
        assert_eq!((begin.version, begin.len), (7, 322));
        assert_eq!(begin.crc, PARAMS_CRC.checksum(&le_bytes(&params)));
        let mut next_offset = 0;
        let mut last = None;
        for step in upload.by_ref() {
            match (step.message, step.ack) {
                (
                    HostMessage::PolicyChunk(chunk),
                    AckTopic::PolicyChunk {
                        version: 7,
                        received,
                    },
                ) => {
                    assert_eq!(chunk.offset as usize, next_offset);
                    let end = next_offset + chunk.values.len();
                    assert_eq!(chunk.values.as_slice(), &params[next_offset..end]);
                    assert_eq!(received as usize, end);
                    next_offset = end;
                }
                other => {
                    last = Some(other);
                    break;
                }
            }
        }
        assert_eq!(next_offset, 322, "two chunks: 240 + 82 values");
        assert_eq!(
            last,
            Some((
                HostMessage::PolicyCommit { version: 7 },
                AckTopic::PolicyCommit { version: 7 }
            ))
        );
        assert_eq!(upload.next(), None);
    }

    #[test]
    fn an_empty_upload_is_begin_then_commit() {
        let spec = spec();
        let kinds: [u8; 2] = {
            let mut it = PolicyUpload::new(1, &spec, &[])
                .messages()
                .map(|m| match m {
                    HostMessage::PolicyBegin(_) => 0,
                    HostMessage::PolicyCommit { .. } => 2,
                    _ => 1,
                });
            [it.next().unwrap_or(9), it.next().unwrap_or(9)]
        };
        assert_eq!(kinds, [0, 2]);
        assert_eq!(PolicyUpload::new(1, &spec, &[]).count(), 2);
    }

    /// The bytes the CRC is defined over, built the plain way.
    fn le_bytes<const N: usize>(values: &[f32; N]) -> Vec<u8, 2048> {
        let mut out = Vec::new();
        for v in values {
            let _ = out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }
}

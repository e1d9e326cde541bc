//! The policy store: two parameter buffers of `CAP` f32 values each.
//!
//! One buffer holds the running policy; uploads go into the other. A commit that passes
//! every check is *staged* and becomes the running policy only when the runtime calls
//! [`PolicyStore::swap_staged`] at an episode boundary. A refused upload never touches the
//! running policy.
//!
//! The buffers hold the parameters in the device's tiled layout ([`crate::policy_tiles`]),
//! not in the wire order: each uploaded value is written straight to its tiled position,
//! and the commit reads the values back in wire order to check the CRC.
//!
//! Every upload command is idempotent, so a host may repeat any of them when an
//! acknowledgement does not come: a repeated begin of the upload in progress keeps what
//! arrived, chunks may come in any order and any number of times (the store keeps the
//! received stretches, [`ReceivedRanges`]), and a repeated commit of the policy just
//! committed is acknowledged again.

use tether_shared::frame::PARAMS_CRC;
use tether_shared::message::{PolicyBegin, PolicyChunk, RefusalReason};
use tether_shared::policy::SpecError;
use tether_shared::{PlantDescription, PolicySpec};

use crate::policy_tiles::{TileLayout, TiledPolicy};
use crate::received_ranges::ReceivedRanges;

/// Largest magnitude of an uploaded log standard deviation (σ between e⁻²⁰ and e²⁰).
pub const MAX_ABS_LOG_STD: f32 = 20.0;

/// Separate received stretches an upload may have at once (the host's window of chunks in
/// flight is smaller).
pub const MAX_UPLOAD_RANGES: usize = 8;

/// A policy's identity: the version the host gave it and its shape.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyMeta {
    /// Version number from [`PolicyBegin::version`].
    pub version: u32,
    /// Shape of the network.
    pub spec: PolicySpec,
}

/// A committed policy: its identity and the sizes its evaluation needs, computed once at
/// commit rather than at every control step.
#[derive(Clone, Debug)]
struct Committed {
    meta: PolicyMeta,
    /// [`PolicySpec::param_count`].
    len: usize,
    /// [`PolicySpec::max_width`].
    width: usize,
}

/// An upload in progress.
#[derive(Clone, Debug)]
struct Upload {
    meta: PolicyMeta,
    len: usize,
    crc: u32,
    received: ReceivedRanges<MAX_UPLOAD_RANGES>,
}

/// Double-buffered policy parameters of capacity `CAP` values per buffer.
pub struct PolicyStore<const CAP: usize> {
    buffers: [[f32; CAP]; 2],
    /// Index of the buffer the running policy lives in.
    active: usize,
    running: Option<Committed>,
    upload: Option<Upload>,
    staged: Option<Committed>,
}

impl<const CAP: usize> Default for PolicyStore<CAP> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const CAP: usize> PolicyStore<CAP> {
    /// An empty store: no running policy.
    pub const fn new() -> Self {
        PolicyStore {
            buffers: [[0.0; CAP]; 2],
            active: 0,
            running: None,
            upload: None,
            staged: None,
        }
    }

    /// Capacity of one buffer, in f32 values.
    pub const fn capacity(&self) -> usize {
        CAP
    }

    /// The running policy's identity, if any.
    pub fn running(&self) -> Option<&PolicyMeta> {
        self.running.as_ref().map(|c| &c.meta)
    }

    /// The committed policy waiting for the next episode boundary, if any.
    pub fn staged(&self) -> Option<&PolicyMeta> {
        self.staged.as_ref().map(|c| &c.meta)
    }

    /// The running policy, ready to evaluate.
    pub fn view(&self) -> Option<TiledPolicy<'_>> {
        let running = self.running.as_ref()?;
        let params = self.buffers.get(self.active)?.get(..running.len)?;
        Some(TiledPolicy::from_checked(
            &running.meta.spec,
            params,
            running.width,
        ))
    }

    /// Starts an upload into the inactive buffer. Any earlier upload, and any staged but not
    /// yet running policy (it lives in the same buffer), is dropped — except when `begin`
    /// repeats the upload in progress (same version, spec, length and CRC): then what
    /// arrived is kept.
    pub fn begin(
        &mut self,
        begin: &PolicyBegin,
        plant: &PlantDescription,
    ) -> Result<(), RefusalReason> {
        check_spec::<CAP>(&begin.spec, plant)?;
        if begin.len as usize != begin.spec.param_count() {
            return Err(RefusalReason::LengthMismatch);
        }
        let repeated = self.upload.as_ref().is_some_and(|u| {
            u.meta.version == begin.version
                && u.len == begin.len as usize
                && u.crc == begin.crc
                && u.meta.spec == begin.spec
        });
        if repeated {
            return Ok(());
        }
        self.staged = None;
        self.upload = Some(Upload {
            meta: PolicyMeta {
                version: begin.version,
                spec: begin.spec.clone(),
            },
            len: begin.len as usize,
            crc: begin.crc,
            received: ReceivedRanges::new(),
        });
        Ok(())
    }

    /// Stores a chunk of the upload in progress, at any offset inside the declared length,
    /// in any order, any number of times; returns the index just past the chunk (the value
    /// its acknowledgement carries). A refused chunk leaves the upload as it was.
    pub fn chunk(&mut self, chunk: &PolicyChunk) -> Result<u32, RefusalReason> {
        let inactive = 1 - self.active;
        let upload = self
            .upload
            .as_mut()
            .filter(|u| u.meta.version == chunk.version)
            .ok_or(RefusalReason::OutOfOrder)?;
        let start = chunk.offset as usize;
        let end = start
            .checked_add(chunk.values.len())
            .filter(|&end| end <= upload.len)
            .ok_or(RefusalReason::LengthMismatch)?;
        // `end <= len`, the spec's parameter count, which `begin` checked against `CAP`:
        // every tiled position is inside the buffer. Each value goes to the same tiled
        // position however often it comes, and the commit's CRC covers the result.
        let mut received = upload.received.clone();
        received
            .insert(start as u32, end as u32)
            .map_err(|_| RefusalReason::OutOfOrder)?;
        let buffer = self
            .buffers
            .get_mut(inactive)
            .ok_or(RefusalReason::OverCapacity)?;
        TileLayout::TARGET
            .scatter(&upload.meta.spec, start, &chunk.values, buffer)
            .map_err(|_| RefusalReason::OverCapacity)?;
        upload.received = received;
        Ok(end as u32)
    }

    /// Checks the finished upload (completeness, CRC, spec, finiteness and log-std range) and
    /// stages it. Any refusal other than [`RefusalReason::OutOfOrder`] abandons the upload.
    /// A commit repeated after it succeeded (its acknowledgement was lost), with no upload
    /// begun since, is accepted again.
    pub fn commit(&mut self, version: u32, plant: &PlantDescription) -> Result<(), RefusalReason> {
        let Some(upload) = self.upload.take_if(|u| u.meta.version == version) else {
            let is_version = |m: Option<&PolicyMeta>| m.is_some_and(|m| m.version == version);
            let committed =
                self.upload.is_none() && (is_version(self.staged()) || is_version(self.running()));
            return if committed {
                Ok(())
            } else {
                Err(RefusalReason::OutOfOrder)
            };
        };
        if !upload.received.is_complete(upload.len as u32) {
            return Err(RefusalReason::Incomplete);
        }
        let params = self
            .buffers
            .get(1 - self.active)
            .and_then(|b| b.get(..upload.len))
            .ok_or(RefusalReason::OverCapacity)?;
        // The CRC covers the wire order: read the tiled buffer back in that order.
        let spec = &upload.meta.spec;
        let mut digest = PARAMS_CRC.digest();
        for position in TileLayout::TARGET.wire_order(spec) {
            let value = params.get(position).ok_or(RefusalReason::LengthMismatch)?;
            digest.update(&value.to_le_bytes());
        }
        if digest.finalize() != upload.crc {
            return Err(RefusalReason::BadCrc);
        }
        check_spec::<CAP>(spec, plant)?;
        let view = TiledPolicy::new(spec, params).map_err(|_| RefusalReason::LengthMismatch)?;
        let log_std_ok = view
            .log_std()
            .is_none_or(|s| s.iter().all(|v| v.abs() <= MAX_ABS_LOG_STD));
        if !params.iter().all(|v| v.is_finite()) || !log_std_ok {
            return Err(RefusalReason::NonFinite);
        }
        self.staged = Some(Committed {
            width: view.width(),
            len: upload.len,
            meta: upload.meta,
        });
        Ok(())
    }

    /// Abandons an upload in progress (the running and staged policies stay).
    pub fn abort_upload(&mut self) {
        self.upload = None;
    }

    /// Makes the staged policy the running one. Call only at an episode boundary. Returns
    /// whether a swap happened.
    pub fn swap_staged(&mut self) -> bool {
        match self.staged.take() {
            Some(committed) => {
                self.active = 1 - self.active;
                self.running = Some(committed);
                // The old running buffer is now the upload target.
                self.upload = None;
                true
            }
            None => false,
        }
    }
}

/// Checks a spec against the protocol limits, the capacity and the plant.
fn check_spec<const CAP: usize>(
    spec: &PolicySpec,
    plant: &PlantDescription,
) -> Result<(), RefusalReason> {
    let capacity = u32::try_from(CAP).unwrap_or(u32::MAX);
    spec.validate(capacity)
        .and_then(|()| spec.check_plant(plant))
        .map_err(|e| match e {
            SpecError::OverCapacity { .. } => RefusalReason::OverCapacity,
            SpecError::PlantMismatch => RefusalReason::PlantMismatch,
            SpecError::ObsDim | SpecError::LayerWidth | SpecError::HeadSize => {
                RefusalReason::BadSpec
            }
        })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use tether_shared::message::{HostMessage, PolicyUpload};
    use tether_shared::plant::PlantDescription;
    use tether_shared::policy::{ForwardError, PolicyView};

    use super::*;
    use crate::plant::Plant;
    use crate::testkit::{Integrator, params_for};

    /// Room for a [64] policy of the integrator (258 values: two chunks) but not a [128].
    const CAP: usize = 300;

    fn plant() -> PlantDescription {
        Integrator::new(false).description()
    }

    fn spec(hidden: &[u16]) -> PolicySpec {
        PolicySpec::for_plant(&plant(), hidden, false)
    }

    /// Feeds upload messages to the store: the first refusal, or `Ok` once all are taken.
    fn feed(
        store: &mut PolicyStore<CAP>,
        messages: impl IntoIterator<Item = HostMessage>,
    ) -> Result<(), RefusalReason> {
        for message in messages {
            match message {
                HostMessage::PolicyBegin(begin) => store.begin(&begin, &plant())?,
                HostMessage::PolicyChunk(chunk) => store.chunk(&chunk).map(|_| ())?,
                HostMessage::PolicyCommit { version } => store.commit(version, &plant())?,
                other => panic!("not an upload message: {other:?}"),
            }
        }
        Ok(())
    }

    /// Uploads and commits `params` as `version`.
    fn upload(
        store: &mut PolicyStore<CAP>,
        version: u32,
        spec: &PolicySpec,
        params: &[f32],
    ) -> Result<(), RefusalReason> {
        feed(store, PolicyUpload::new(version, spec, params).messages())
    }

    /// Outputs of a forward pass for a few observations, as bits.
    fn outputs_of(
        forward: impl Fn(&[f32], &mut [f32], &mut [f32]) -> Result<(), ForwardError>,
    ) -> Vec<u32> {
        let mut scratch = [0.0f32; 512];
        let mut out = [0.0f32; 1];
        [[0.3f32, 1.0], [-2.0, 1.0], [0.0, 0.0]]
            .iter()
            .flat_map(|obs| {
                forward(obs, &mut scratch, &mut out).expect("valid shapes");
                out.map(f32::to_bits)
            })
            .collect()
    }

    /// The running policy's outputs.
    fn outputs(store: &PolicyStore<CAP>) -> Vec<u32> {
        let view = store.view().expect("a running policy");
        outputs_of(|obs, scratch, out| view.forward(obs, scratch, out))
    }

    /// The shared forward pass's outputs over the wire-order parameters.
    fn reference_outputs(spec: &PolicySpec, params: &[f32]) -> Vec<u32> {
        let view = PolicyView::new(spec, params).expect("valid parameters");
        outputs_of(|obs, scratch, out| view.forward(obs, scratch, out))
    }

    #[test]
    fn a_commit_is_staged_until_the_swap_then_runs_exactly_the_upload() {
        let mut store = PolicyStore::<CAP>::new();
        assert_eq!(store.capacity(), CAP);
        assert!(store.running().is_none() && store.staged().is_none());
        assert!(store.view().is_none());
        assert!(!store.swap_staged(), "nothing to swap in");

        let spec = spec(&[64]);
        let params = params_for(&spec, 1, -0.5);
        assert_eq!(upload(&mut store, 7, &spec, &params), Ok(()));
        assert_eq!(store.staged().map(|m| m.version), Some(7));
        assert!(store.running().is_none(), "not before an episode boundary");
        assert!(store.swap_staged());
        assert_eq!(
            store.running().map(|m| (m.version, &m.spec)),
            Some((7, &spec))
        );
        assert!(store.staged().is_none());
        assert_eq!(outputs(&store), reference_outputs(&spec, &params));
        assert_eq!(store.view().and_then(|v| v.log_std()), Some(&[-0.5f32][..]));

        // The next upload goes to the other buffer and replaces the policy at its swap.
        let other = params_for(&spec, 2, -1.0);
        assert_eq!(upload(&mut store, 8, &spec, &other), Ok(()));
        assert_eq!(
            outputs(&store),
            reference_outputs(&spec, &params),
            "v7 still runs"
        );
        assert!(store.swap_staged());
        assert_eq!(store.running().map(|m| m.version), Some(8));
        assert_eq!(outputs(&store), reference_outputs(&spec, &other));
    }

    #[test]
    fn refused_uploads_leave_the_running_policy_untouched() {
        let mut store = PolicyStore::<CAP>::new();
        let spec = spec(&[64]);
        let params = params_for(&spec, 1, -0.5);
        upload(&mut store, 1, &spec, &params).expect("valid upload");
        store.swap_staged();
        let before = outputs(&store);

        let too_big = self::spec(&[128]);
        let mut other_plant = self::spec(&[8]);
        other_plant.obs_dim = 3;
        let mut bad_crc = Vec::new();
        for message in PolicyUpload::new(2, &spec, &params).messages() {
            bad_crc.push(match message {
                HostMessage::PolicyBegin(mut begin) => {
                    begin.crc ^= 1;
                    HostMessage::PolicyBegin(begin)
                }
                other => other,
            });
        }
        let mut nan = params.clone();
        nan[3] = f32::NAN;
        let wide_log_std = params_for(&spec, 1, 20.5);
        let cases: [(&str, Result<(), RefusalReason>); 6] = [
            (
                "over capacity",
                upload(&mut store, 2, &too_big, &params_for(&too_big, 1, 0.0)),
            ),
            (
                "another plant",
                upload(
                    &mut store,
                    2,
                    &other_plant,
                    &params_for(&other_plant, 1, 0.0),
                ),
            ),
            ("short", upload(&mut store, 2, &spec, &params[..200])),
            ("non-finite", upload(&mut store, 2, &spec, &nan)),
            (
                "log-std past ±20",
                upload(&mut store, 2, &spec, &wide_log_std),
            ),
            ("bad CRC", feed(&mut store, bad_crc)),
        ];
        let expected = [
            RefusalReason::OverCapacity,
            RefusalReason::PlantMismatch,
            RefusalReason::LengthMismatch,
            RefusalReason::NonFinite,
            RefusalReason::NonFinite,
            RefusalReason::BadCrc,
        ];
        for ((what, result), reason) in cases.into_iter().zip(expected) {
            assert_eq!(result, Err(reason), "{what}");
            assert!(store.staged().is_none(), "{what}: nothing staged");
            assert!(!store.swap_staged(), "{what}: nothing to swap in");
            assert_eq!(store.running().map(|m| m.version), Some(1), "{what}");
            assert_eq!(
                outputs(&store),
                before,
                "{what}: the running policy is untouched"
            );
        }
    }

    #[test]
    fn chunks_come_in_any_order_and_every_command_may_be_repeated() {
        let mut store = PolicyStore::<CAP>::new();
        let spec = spec(&[64]);
        let params = params_for(&spec, 3, -0.5);
        let upload = PolicyUpload::new(4, &spec, &params);
        let HostMessage::PolicyBegin(begin) = upload.begin().message else {
            panic!("a begin");
        };
        let chunk = |offset, values| match upload.chunk_of(offset, values).0.message {
            HostMessage::PolicyChunk(chunk) => chunk,
            other => panic!("a chunk: {other:?}"),
        };
        let (a, b, c) = (chunk(0, 100), chunk(100, 100), chunk(200, 100));
        assert_eq!(c.values.len(), 58, "258 values in all");
        assert_eq!(
            store.chunk(&a),
            Err(RefusalReason::OutOfOrder),
            "no upload begun"
        );
        store.begin(&begin, &plant()).expect("valid begin");
        assert_eq!(store.chunk(&c), Ok(258), "the last chunk first");
        assert_eq!(store.chunk(&a), Ok(100));
        assert_eq!(store.chunk(&a), Ok(100), "and again");
        let mut wrong_version = b.clone();
        wrong_version.version = 5;
        assert_eq!(store.chunk(&wrong_version), Err(RefusalReason::OutOfOrder));
        let mut overlong = c.clone();
        overlong.values.extend_from_slice(&[0.0; 10]).expect("room");
        assert_eq!(store.chunk(&overlong), Err(RefusalReason::LengthMismatch));
        // The begin repeated (its acknowledgement was lost): what arrived is kept.
        store.begin(&begin, &plant()).expect("valid begin");
        assert_eq!(store.commit(9, &plant()), Err(RefusalReason::OutOfOrder));
        assert_eq!(store.chunk(&b), Ok(200));
        assert_eq!(store.commit(4, &plant()), Ok(()));
        assert_eq!(
            store.commit(4, &plant()),
            Ok(()),
            "a repeated commit is acknowledged again"
        );
        assert!(store.swap_staged());
        assert_eq!(outputs(&store), reference_outputs(&spec, &params));
        assert_eq!(store.commit(4, &plant()), Ok(()), "and after the swap");
        assert_eq!(store.commit(3, &plant()), Err(RefusalReason::OutOfOrder));

        // An incomplete commit abandons the upload; chunks of it are refused afterwards.
        let upload = PolicyUpload::new(5, &spec, &params);
        let HostMessage::PolicyBegin(begin) = upload.begin().message else {
            panic!("a begin");
        };
        store.begin(&begin, &plant()).expect("valid begin");
        let HostMessage::PolicyChunk(first) = upload.chunk_of(0, 240).0.message else {
            panic!("a chunk");
        };
        assert_eq!(store.chunk(&first), Ok(240));
        assert_eq!(store.commit(5, &plant()), Err(RefusalReason::Incomplete));
        assert_eq!(store.chunk(&first), Err(RefusalReason::OutOfOrder));
        assert_eq!(store.running().map(|m| m.version), Some(4));
    }

    /// More separate stretches than the store tracks: the chunk is refused and nothing
    /// changes; once the stretches join, it is taken.
    #[test]
    fn a_chunk_that_would_scatter_the_upload_too_far_waits() {
        let mut store = PolicyStore::<CAP>::new();
        let spec = spec(&[64]);
        let params = params_for(&spec, 3, -0.5);
        let upload = PolicyUpload::new(4, &spec, &params);
        let HostMessage::PolicyBegin(begin) = upload.begin().message else {
            panic!("a begin");
        };
        store.begin(&begin, &plant()).expect("valid begin");
        let chunk = |offset| match upload.chunk_of(offset, 1).0.message {
            HostMessage::PolicyChunk(chunk) => chunk,
            other => panic!("a chunk: {other:?}"),
        };
        for i in 0..MAX_UPLOAD_RANGES {
            assert!(store.chunk(&chunk(2 * i + 1)).is_ok());
        }
        let far = chunk(2 * MAX_UPLOAD_RANGES + 1);
        assert_eq!(store.chunk(&far), Err(RefusalReason::OutOfOrder));
        assert_eq!(store.chunk(&chunk(2)), Ok(3), "joins two stretches");
        assert_eq!(store.chunk(&far), Ok(2 * MAX_UPLOAD_RANGES as u32 + 2));
    }

    #[test]
    fn a_new_begin_drops_a_staged_policy_and_an_abort_keeps_what_runs() {
        let mut store = PolicyStore::<CAP>::new();
        let spec = spec(&[64]);
        let params = params_for(&spec, 1, -0.5);
        upload(&mut store, 1, &spec, &params).expect("valid upload");
        store.swap_staged();
        upload(&mut store, 2, &spec, &params_for(&spec, 2, -0.5)).expect("valid upload");
        assert_eq!(store.staged().map(|m| m.version), Some(2));

        // The staged policy lives in the buffer a new upload writes to.
        let begin = match PolicyUpload::new(3, &spec, &params).messages().next() {
            Some(HostMessage::PolicyBegin(begin)) => begin,
            other => panic!("begin first: {other:?}"),
        };
        store.begin(&begin, &plant()).expect("valid begin");
        assert!(store.staged().is_none());
        store.abort_upload();
        assert_eq!(store.commit(3, &plant()), Err(RefusalReason::OutOfOrder));
        assert_eq!(store.running().map(|m| m.version), Some(1));
        assert_eq!(outputs(&store), reference_outputs(&spec, &params));
    }
}

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

use tether_shared::frame::PARAMS_CRC;
use tether_shared::message::{PolicyBegin, PolicyChunk, RefusalReason};
use tether_shared::policy::SpecError;
use tether_shared::{PlantDescription, PolicySpec};

use crate::policy_tiles::{TileLayout, TiledPolicy};

/// Largest magnitude of an uploaded log standard deviation (σ between e⁻²⁰ and e²⁰).
pub const MAX_ABS_LOG_STD: f32 = 20.0;

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
    received: usize,
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
    /// yet running policy (it lives in the same buffer), is dropped.
    pub fn begin(
        &mut self,
        begin: &PolicyBegin,
        plant: &PlantDescription,
    ) -> Result<(), RefusalReason> {
        check_spec::<CAP>(&begin.spec, plant)?;
        if begin.len as usize != begin.spec.param_count() {
            return Err(RefusalReason::LengthMismatch);
        }
        self.staged = None;
        self.upload = Some(Upload {
            meta: PolicyMeta {
                version: begin.version,
                spec: begin.spec.clone(),
            },
            len: begin.len as usize,
            crc: begin.crc,
            received: 0,
        });
        Ok(())
    }

    /// Stores a chunk of the upload in progress; returns the number of values received so
    /// far. A chunk must start exactly where the previous one ended. A refused chunk leaves
    /// the upload where it was, so the host may resend from the received count.
    pub fn chunk(&mut self, chunk: &PolicyChunk) -> Result<u32, RefusalReason> {
        let inactive = 1 - self.active;
        let upload = self
            .upload
            .as_mut()
            .filter(|u| u.meta.version == chunk.version)
            .ok_or(RefusalReason::OutOfOrder)?;
        let resent_last = !chunk.values.is_empty()
            && (chunk.offset as usize).checked_add(chunk.values.len()) == Some(upload.received);
        if resent_last {
            // The host resends the last chunk when its acknowledgement was lost: write it
            // again (the commit's CRC covers the result) and acknowledge the same total.
            // Each value goes to the same tiled position as the first time.
            let buffer = self
                .buffers
                .get_mut(inactive)
                .ok_or(RefusalReason::OverCapacity)?;
            TileLayout::TARGET
                .scatter(
                    &upload.meta.spec,
                    chunk.offset as usize,
                    &chunk.values,
                    buffer,
                )
                .map_err(|_| RefusalReason::OverCapacity)?;
            return Ok(upload.received as u32);
        }
        if chunk.offset as usize != upload.received {
            return Err(RefusalReason::OutOfOrder);
        }
        let end = upload
            .received
            .checked_add(chunk.values.len())
            .filter(|&end| end <= upload.len)
            .ok_or(RefusalReason::LengthMismatch)?;
        // `end <= len`, the spec's parameter count, which `begin` checked against `CAP`:
        // every tiled position is inside the buffer.
        let buffer = self
            .buffers
            .get_mut(inactive)
            .ok_or(RefusalReason::OverCapacity)?;
        TileLayout::TARGET
            .scatter(&upload.meta.spec, upload.received, &chunk.values, buffer)
            .map_err(|_| RefusalReason::OverCapacity)?;
        upload.received = end;
        Ok(end as u32)
    }

    /// Checks the finished upload (completeness, CRC, spec, finiteness and log-std range) and
    /// stages it. Any refusal other than [`RefusalReason::OutOfOrder`] abandons the upload.
    pub fn commit(&mut self, version: u32, plant: &PlantDescription) -> Result<(), RefusalReason> {
        let upload = self
            .upload
            .take_if(|u| u.meta.version == version)
            .ok_or(RefusalReason::OutOfOrder)?;
        if upload.received != upload.len {
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

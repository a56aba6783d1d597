//! Each device's server-side ack cursor: "this device has the user's inbox up to here".
//! Persisted lazily: a lost cursor only means a re-delivery the client dedups.

use std::sync::Arc;

use crate::accounts::devices::Devices;
use crate::error::{ServiceError, ServiceResult};
use crate::sequencer::Sequencer;

pub struct Cursors {
    devices: Arc<Devices>,
    sequencer: Arc<dyn Sequencer>,
}

impl Cursors {
    pub fn new(devices: Arc<Devices>, sequencer: Arc<dyn Sequencer>) -> Self {
        Self { devices, sequencer }
    }

    /// Moves the device's cursor forward (never back); an ack past the user's inbox head
    /// is refused.
    pub fn ack(&self, user: &str, device: &str, inbox_seq: u64) -> ServiceResult<()> {
        let head = self.sequencer.inbox_head(user)?;
        if inbox_seq > head {
            return Err(ServiceError::invalid(format!(
                "ack {inbox_seq} is beyond the inbox head {head}"
            )));
        }
        self.devices.update(user, device, |rec| {
            let forward = inbox_seq > rec.acked_inbox_seq;
            if forward {
                rec.acked_inbox_seq = inbox_seq;
            }
            Ok::<_, ServiceError>(forward)
        })?;
        Ok(())
    }

    /// The device's cursor (0 for a device never seen).
    pub fn acked(&self, user: &str, device: &str) -> ServiceResult<u64> {
        Ok(self
            .devices
            .get(user, device)?
            .map(|d| d.acked_inbox_seq)
            .unwrap_or(0))
    }
}

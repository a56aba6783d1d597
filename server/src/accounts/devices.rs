//! Device records (token epoch, ack cursor, last login), read-modify-written under one
//! lock so a login, a revoke and an ack of the same device never lose each other's
//! update.

use std::sync::{Arc, Mutex};

use crate::error::ServiceResult;
use crate::store::{DeviceRecord, Store};

pub struct Devices {
    store: Arc<dyn Store>,
    lock: Mutex<()>,
}

impl Devices {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            lock: Mutex::new(()),
        }
    }

    pub fn get(&self, user: &str, device: &str) -> ServiceResult<Option<DeviceRecord>> {
        Ok(self.store.device(user, device)?)
    }

    /// Reads the device's record (default when new), lets `f` change it, and writes it
    /// back when `f` returns true. Returns the record as it is afterwards.
    pub fn update<E>(
        &self,
        user: &str,
        device: &str,
        f: impl FnOnce(&mut DeviceRecord) -> Result<bool, E>,
    ) -> Result<DeviceRecord, E>
    where
        E: From<crate::error::ServiceError>,
    {
        let _g = self.lock.lock().unwrap();
        let mut rec = self.get(user, device).map_err(E::from)?.unwrap_or_default();
        if f(&mut rec)? {
            self.store
                .put_device(user, device, &rec)
                .map_err(|e| E::from(e.into()))?;
        }
        Ok(rec)
    }
}

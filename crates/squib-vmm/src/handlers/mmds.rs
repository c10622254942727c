//! MMDS actions: the data store (`PUT`/`PATCH`/`GET /mmds`) and its configuration.

use squib_api::action::ApiResponse;
use squib_api::schemas::{MmdsConfig, MmdsContents};
use squib_mmds::data_store::MmdsStoreError;

use crate::controller::{ActionError, ActionResult};
use crate::vmm::Vmm;

/// Firecracker answers 413 when the store would exceed its limit, 400 (`MMDS error: ...`)
/// otherwise.
fn store_error(e: &MmdsStoreError) -> ActionError {
    match e {
        MmdsStoreError::LimitExceeded => ActionError::Fault(ApiResponse::Fault {
            status: 413,
            fault_message: format!("MMDS limit exceeded error: {e}"),
        }),
        MmdsStoreError::NotInitialized | MmdsStoreError::NotAnObject => ActionError::invalid(e),
    }
}

impl Vmm {
    /// `GET /mmds`.
    pub(crate) fn get_mmds(&mut self) -> ActionResult {
        Ok(ApiResponse::Json(self.mmds.get()))
    }

    /// `PUT /mmds`: replace the document.
    pub(crate) fn put_mmds(&mut self, contents: MmdsContents) -> ActionResult {
        self.mmds.put(contents.0).map_err(|e| store_error(&e))?;
        Ok(ApiResponse::NoContent)
    }

    /// `PATCH /mmds`: JSON merge patch.
    pub(crate) fn patch_mmds(&mut self, contents: MmdsContents) -> ActionResult {
        self.mmds.patch(&contents.0).map_err(|e| store_error(&e))?;
        Ok(ApiResponse::NoContent)
    }

    /// `PUT /mmds/config`: every listed interface must exist.
    pub(crate) fn put_mmds_config(&mut self, config: MmdsConfig) -> ActionResult {
        let known = |id: &squib_api::schemas::IfaceId| {
            self.resources
                .net_interfaces()
                .any(|n| &n.config.iface_id == id)
        };
        if !config.network_interfaces.iter().all(known) {
            return Err(ActionError::invalid(
                "The list of network interface IDs provided contains at least one ID that does not correspond to any existing network interface.",
            ));
        }
        self.resources.mmds_config = Some(config);
        Ok(ApiResponse::NoContent)
    }
}

//! MMDS actions: the data store (`PUT`/`PATCH`/`GET /mmds`) and its configuration.

use squib_api::action::ApiResponse;
use squib_api::schemas::{MmdsConfig, MmdsContents};
use squib_mmds::data_store::MmdsStoreError;

use crate::controller::fault;
use crate::vmm::Vmm;

/// Firecracker answers 413 when the store would exceed its limit, 400 otherwise.
fn store_error(e: &MmdsStoreError) -> ApiResponse {
    match e {
        MmdsStoreError::LimitExceeded => ApiResponse::Fault {
            status: 413,
            fault_message: format!("MMDS limit exceeded error: {e}"),
        },
        MmdsStoreError::NotInitialized | MmdsStoreError::NotAnObject => fault("MMDS error", e),
    }
}

impl Vmm {
    /// `PUT /mmds`: replace the document.
    pub(crate) fn put_mmds(&mut self, contents: MmdsContents) -> ApiResponse {
        match self.mmds.put(contents.0) {
            Ok(()) => ApiResponse::NoContent,
            Err(e) => store_error(&e),
        }
    }

    /// `PATCH /mmds`: JSON merge patch.
    pub(crate) fn patch_mmds(&mut self, contents: MmdsContents) -> ApiResponse {
        match self.mmds.patch(&contents.0) {
            Ok(()) => ApiResponse::NoContent,
            Err(e) => store_error(&e),
        }
    }

    /// `PUT /mmds/config`: every listed interface must exist.
    pub(crate) fn put_mmds_config(&mut self, config: MmdsConfig) -> ApiResponse {
        let known = |id: &squib_api::schemas::IfaceId| {
            self.resources
                .net_interfaces()
                .any(|n| &n.config.iface_id == id)
        };
        if !config.network_interfaces.iter().all(known) {
            return fault(
                "MMMDS config error",
                "The list of network interface IDs provided contains at least one ID that does not correspond to any existing network interface.",
            );
        }
        self.resources.mmds_config = Some(config);
        ApiResponse::NoContent
    }
}

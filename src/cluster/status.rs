//! The status writer: every status write is a server-side apply of the status subresource
//! under the writer's own field manager, so the controller and the sync Job never fight over
//! fields and a user's spec is never touched.

use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use serde::de::DeserializeOwned;
use serde_json::json;

/// Field manager of the controller's status writes.
pub const CONTROLLER_MANAGER: &str = "catalogsync-controller";
/// Field manager of the sync Job's status writes to its SyncRun.
pub const JOB_MANAGER: &str = "catalogsync-sync";

/// Applies `status` (a JSON object with the fields this writer owns) to the status
/// subresource of `name`. Forced, because each writer is the only owner of its fields.
pub async fn apply<K>(
    api: &Api<K>,
    name: &str,
    manager: &str,
    status: serde_json::Value,
) -> kube::Result<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    apply_with(api, name, PatchParams::apply(manager).force(), status).await
}

/// Like [`apply`], but not forced: fails with a 409 Conflict when another writer
/// owns one of the fields with a different value (it got there first), so
/// nothing of this write lands.
pub async fn apply_unless_owned<K>(
    api: &Api<K>,
    name: &str,
    manager: &str,
    status: serde_json::Value,
) -> kube::Result<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    apply_with(api, name, PatchParams::apply(manager), status).await
}

async fn apply_with<K>(
    api: &Api<K>,
    name: &str,
    params: PatchParams,
    status: serde_json::Value,
) -> kube::Result<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let body = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(name, &params, &Patch::Apply(&body)).await
}

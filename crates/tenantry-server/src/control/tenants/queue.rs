//! What the services know of the job queue on this node: where job files
//! live and how long a lease runs. The workers that run jobs are in
//! `crate::jobs`; the queue itself is a table of the control store.

use std::path::PathBuf;
use std::time::Duration;
use tenantry::{JobId, TenantId};
use tokio::sync::Notify;

/// What the services know of the job queue on this node.
pub struct JobQueue {
    /// This node's id (kept in the data dir): jobs whose input file lives
    /// here (an upload) are run here only.
    pub node: String,
    /// A running job unheard of for this long is taken over.
    pub lease: Duration,
    /// Wakes this node's idle workers when a job is queued.
    pub wake: Notify,
    /// The data dir: exports and uploads are kept under it.
    pub dir: PathBuf,
    pub import_max_bytes: u64,
    /// How long a move keeps the copy it left before dropping it.
    pub source_grace: Duration,
}

impl JobQueue {
    /// Where an export's file is written.
    pub fn export_path(&self, tenant: TenantId, job: JobId, ext: &str) -> PathBuf {
        self.dir
            .join("exports")
            .join(tenant.to_string())
            .join(format!("{job}.{ext}"))
    }

    /// Where an uploaded import file is kept until its job ends.
    pub fn upload_path(&self, tenant: TenantId, job: JobId) -> PathBuf {
        self.dir
            .join("imports")
            .join(tenant.to_string())
            .join(format!("{job}.upload"))
    }

    /// Every file the tenant's jobs left (a deletion removes them).
    pub fn remove_files(&self, tenant: TenantId) -> std::io::Result<()> {
        for kind in ["exports", "imports"] {
            match std::fs::remove_dir_all(self.dir.join(kind).join(tenant.to_string())) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// This node's id: created once in the data dir.
pub fn node_id(dir: &std::path::Path) -> anyhow::Result<String> {
    let path = dir.join("node.id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        _ => {
            let id = uuid::Uuid::new_v4().to_string();
            std::fs::write(&path, &id)?;
            Ok(id)
        }
    }
}

//! The durable job queue: one unfinished job per tenant, one worker per
//! job, leases that run out.

use crate::engine::{Engine, audit};
use chrono::{Duration, Utc};
use futures::future::join_all;
use serde_json::json;
use tenantry::job::{Claim, Job, JobKind, JobOutcome, JobStatus};
use tenantry::store::StoreError;
use tenantry::tenant::Isolation;

crate::on_both_engines!(
    a_tenant_has_one_unfinished_job_at_a_time,
    a_job_is_claimed_by_one_of_many_workers,
    a_lapsed_lease_passes_the_job_to_another_worker,
);

fn export(tenant: tenantry::TenantId) -> Job {
    Job::queued(
        tenant,
        JobKind::Export,
        json!({"format": "json"}),
        "conformance",
        None,
        Utc::now(),
    )
}

async fn a_tenant_has_one_unfinished_job_at_a_time(engine: Engine) {
    let tenant = engine.tenant("queue", Isolation::Shared).await;
    let store = &engine.store;
    let first = export(tenant.id);
    store
        .insert_job(&tenant, &first, &audit("job.create"))
        .await
        .expect("queue");
    let second = store
        .insert_job(&tenant, &export(tenant.id), &audit("job.create"))
        .await;
    assert_eq!(second, Err(StoreError::Conflict("job".into())));

    let claim = Claim {
        worker: "w1",
        node: "n1",
        now: Utc::now(),
        lease: Duration::seconds(30),
        only: None,
    };
    let claimed = store
        .claim_job(&claim)
        .await
        .expect("claim")
        .expect("a job");
    let done = JobOutcome::Succeeded { result_url: None };
    assert!(
        store
            .finish_job(claimed.id, "w1", Utc::now(), &done)
            .await
            .expect("finish")
    );
    store
        .insert_job(&tenant, &export(tenant.id), &audit("job.create"))
        .await
        .expect("a finished job leaves room for the next");
}

async fn a_job_is_claimed_by_one_of_many_workers(engine: Engine) {
    let tenant = engine.tenant("claims", Isolation::Shared).await;
    let job = export(tenant.id);
    engine
        .store
        .insert_job(&tenant, &job, &audit("job.create"))
        .await
        .expect("queue");
    let now = Utc::now();
    let workers: Vec<String> = (0..8).map(|n| format!("worker-{n}")).collect();
    let claims = workers.iter().map(|worker| {
        let store = engine.store.clone();
        async move {
            let claim = Claim {
                worker,
                node: "n1",
                now,
                lease: Duration::seconds(30),
                only: None,
            };
            store.claim_job(&claim).await
        }
    });
    let results = join_all(claims).await;
    let won: Vec<_> = results
        .iter()
        .filter_map(|r| r.as_ref().expect("claim").as_ref())
        .collect();
    assert_eq!(won.len(), 1, "{results:?}");
    assert_eq!(
        (won[0].id, won[0].status, won[0].attempts),
        (job.id, JobStatus::Running, 1)
    );
}

async fn a_lapsed_lease_passes_the_job_to_another_worker(engine: Engine) {
    let tenant = engine.tenant("leases", Isolation::Shared).await;
    let job = export(tenant.id);
    let store = &engine.store;
    store
        .insert_job(&tenant, &job, &audit("job.create"))
        .await
        .expect("queue");
    let start = Utc::now();
    let claim = |worker, now| Claim {
        worker,
        node: "n1",
        now,
        lease: Duration::seconds(10),
        only: Some(job.id),
    };
    store
        .claim_job(&claim("w1", start))
        .await
        .expect("claim")
        .expect("w1 runs it");
    let early = store
        .claim_job(&claim("w2", start + Duration::seconds(5)))
        .await;
    assert_eq!(
        early.map(|j| j.map(|j| j.id)),
        Ok(None),
        "the lease still runs"
    );

    let late = start + Duration::seconds(11);
    let taken = store
        .claim_job(&claim("w2", late))
        .await
        .expect("claim")
        .expect("w2 takes over");
    assert_eq!(taken.attempts, 2);
    let beat = store
        .heartbeat_job(job.id, "w1", late, 0.5, Some(&json!({"step": 1})))
        .await;
    assert_eq!(beat, Ok(false), "the old worker learns it lost the job");
    let failed = JobOutcome::Failed {
        error: "late".into(),
    };
    assert_eq!(
        store.finish_job(job.id, "w1", late, &failed).await,
        Ok(false)
    );
    assert_eq!(
        store
            .heartbeat_job(job.id, "w2", late, 0.5, Some(&json!({"step": 1})))
            .await,
        Ok(true)
    );
    let done = JobOutcome::Succeeded {
        result_url: Some("/exports/x".into()),
    };
    assert_eq!(store.finish_job(job.id, "w2", late, &done).await, Ok(true));
    let stored = store.job(job.id).await.expect("read").expect("kept");
    assert_eq!(stored.status, JobStatus::Succeeded);
    assert_eq!(stored.state, json!({"step": 1}));
    assert_eq!(stored.result_url.as_deref(), Some("/exports/x"));
}

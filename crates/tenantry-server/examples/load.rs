//! Load generator for `bench/load.sh`: seeds tenants through the API, then
//! measures throughput and latency of a few endpoints at a fixed
//! concurrency, each for the same total duration, taking turns in short
//! slices, in one run.
//!
//! Usage: load <base-url> <admin-email> <admin-password> [tenants] [records-per-tenant] [seconds] [connections] [dedicated-every]
//!        load <base-url> <admin-email> <admin-password> noisy [seconds]
//!        load <base-url> <admin-email> <admin-password> provision <tenants> <shared|dedicated> <label>
//!        load <base-url> <admin-email> <admin-password> mobility <records> <shared|dedicated> <label> <server-pid>
//! (`provision`: creates tenants one after another and reports the latency
//! of `POST /api/v1/tenants`, which answers only once the tenant is usable.)
//! (`noisy`: two tenants on a 50 req/s plan; the quiet one's latency is
//! measured alone, then while the other sends at 10x its limit, then while
//! it sends flat out.)
//! (`mobility`: a tenant of `records` records is exported, the file imported
//! into a new tenant, and the first moved to the other tier and back while
//! four writers write to it; prints records/s of each job, the server's RSS
//! growth during the export and import, and the writers' latency during
//! the moves.)
//! (`dedicated-every` = 2: every second tenant is dedicated; 0: none)
//! (`ACCESS=uniform|zipf|both`: which tenant each request goes to: any
//! with the same chance, or the k-th seeded with a chance proportional to
//! 1/k, as real traffic concentrates on a few tenants; `both` measures
//! each endpoint under both, side by side in one run.)

use rand::seq::SliceRandom;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

const PASSWORD: &str = "Bench-Passw0rd!42";
/// Turns each endpoint takes in the load run (see `main`).
const ROUNDS: u32 = 5;

struct Target {
    token: String,
    record_paths: Vec<String>,
}

async fn post(
    client: &reqwest::Client,
    url: String,
    token: Option<&str>,
    body: Value,
    headers: &[(&str, &str)],
) -> anyhow::Result<Value> {
    let mut req = client.post(url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = req.send().await?;
    let status = res.status();
    let body: Value = res.json().await?;
    anyhow::ensure!(status.is_success(), "{status}: {body}");
    Ok(body)
}

/// Creates a tenant through the API, an admin user, its token and `records` records.
async fn seed_tenant(
    client: reqwest::Client,
    base: String,
    staff: String,
    slug: String,
    plan: &'static str,
    isolation: &'static str,
    records: usize,
) -> anyhow::Result<Target> {
    post(
        &client,
        format!("{base}/api/v1/tenants"),
        Some(&staff),
        json!({"name": slug, "slug": slug, "plan": plan, "isolation": isolation}),
        &[],
    )
    .await?;
    let email = format!("user@{slug}.example");
    post(
        &client,
        format!("{base}/api/v1/users"),
        Some(&staff),
        json!({"email": email, "password": PASSWORD, "name": "Bench", "role": "admin"}),
        &[("x-tenant-slug", &slug)],
    )
    .await?;
    let login = post(
        &client,
        format!("{base}/api/v1/auth/login"),
        None,
        json!({"email": email, "password": PASSWORD, "tenant": slug}),
        &[],
    )
    .await?;
    let token = login["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut record_paths = Vec::with_capacity(records);
    for n in 0..records {
        let r = post(&client, format!("{base}/api/v1/collections/complaints/records"), Some(&token),
            json!({"title": format!("Complaint {n}"), "status": if n % 3 == 0 { "resolved" } else { "open" }, "ward": n % 7}), &[]).await?;
        record_paths.push(format!(
            "/api/v1/collections/complaints/records/{}",
            r["id"].as_str().unwrap_or_default()
        ));
    }
    Ok(Target {
        token,
        record_paths,
    })
}

#[derive(Clone, Copy)]
enum Kind {
    Healthz,
    GetById,
    List,
    Create,
}

/// One endpoint's measurements, summed over the rounds.
#[derive(Default)]
struct Outcome {
    /// Microseconds per successful request.
    latencies: Vec<u32>,
    errors: usize,
    secs: f64,
}

impl Outcome {
    fn add(&mut self, other: Outcome) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        self.secs += other.secs;
    }

    fn rps(&self) -> f64 {
        self.latencies.len() as f64 / self.secs
    }

    /// Nearest-rank percentile in milliseconds (sorts in place).
    fn percentile(&mut self, p: f64) -> f64 {
        self.latencies.sort_unstable();
        let l = &self.latencies;
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .map_or(0.0, |v| *v as f64 / 1000.0)
    }
}

/// How the load spreads over the tenants.
#[derive(Clone, Copy)]
enum Access {
    Uniform,
    Zipf,
}

impl Access {
    /// A sampler of target indexes, `0..n`.
    fn sampler(self, n: usize) -> rand::distributions::WeightedIndex<f64> {
        let weight = |k: usize| match self {
            Access::Uniform => 1.0,
            Access::Zipf => 1.0 / (k + 1) as f64,
        };
        rand::distributions::WeightedIndex::new((0..n).map(weight)).expect("targets")
    }
}

async fn measure(
    client: &reqwest::Client,
    base: &str,
    targets: &Arc<Vec<Target>>,
    (kind, access): (Kind, Access),
    slice: Duration,
    conns: usize,
) -> Outcome {
    let sampler = Arc::new(access.sampler(targets.len()));
    let latencies = Arc::new(Mutex::new(Vec::<u32>::new()));
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let deadline = Instant::now() + slice;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..conns {
        let (client, base, targets, latencies, errors, sampler) = (
            client.clone(),
            base.to_owned(),
            targets.clone(),
            latencies.clone(),
            errors.clone(),
            sampler.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut local = Vec::new();
            let mut rng = rand::rngs::StdRng::seed_from_u64(worker as u64);
            while Instant::now() < deadline {
                let t = &targets[rand::distributions::Distribution::sample(&*sampler, &mut rng)];
                let req = match kind {
                    Kind::Healthz => client.get(format!("{base}/healthz")),
                    Kind::GetById => {
                        let path = t.record_paths.choose(&mut rng).expect("records");
                        client.get(format!("{base}{path}")).bearer_auth(&t.token)
                    }
                    Kind::List => client
                        .get(format!(
                            "{base}/api/v1/collections/complaints/records?limit=50"
                        ))
                        .bearer_auth(&t.token),
                    Kind::Create => client
                        .post(format!("{base}/api/v1/collections/complaints/records"))
                        .bearer_auth(&t.token)
                        .json(&json!({"title": "load", "status": "open", "ward": 1})),
                };
                let sent = Instant::now();
                match req.send().await {
                    Ok(res) if res.status().is_success() => {
                        let _ = res.bytes().await;
                        local.push(sent.elapsed().as_micros() as u32);
                    }
                    _ => {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
            latencies.lock().await.extend(local);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    let latencies = std::mem::take(&mut *latencies.lock().await);
    Outcome {
        latencies,
        errors: errors.load(std::sync::atomic::Ordering::Relaxed),
        secs,
    }
}

use rand::SeedableRng;

/// Connections the noisy tenant floods from.
const FLOOD_CONNECTIONS: u32 = 28;

/// p50/p99 (ms) of GET-by-id for `quiet` at a steady 4 connections, while
/// `flood` (if any) sends from 28 more: `flood_rate` requests a second in
/// all, or as fast as the connections go when it is 0.
async fn quiet_latency(
    client: &reqwest::Client,
    base: &str,
    quiet: &Target,
    flood: Option<&Target>,
    flood_rate: u32,
    secs: u64,
) -> (f64, f64, usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut flooders = Vec::new();
    let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    if let Some(f) = flood {
        let period = (flood_rate > 0)
            .then(|| Duration::from_secs_f64(f64::from(FLOOD_CONNECTIONS) / f64::from(flood_rate)));
        for _ in 0..FLOOD_CONNECTIONS {
            let (client, base, token, path, refused) = (
                client.clone(),
                base.to_owned(),
                f.token.clone(),
                f.record_paths[0].clone(),
                refused.clone(),
            );
            flooders.push(tokio::spawn(async move {
                let mut pace = period.map(tokio::time::interval);
                while Instant::now() < deadline {
                    if let Some(pace) = pace.as_mut() {
                        pace.tick().await;
                    }
                    if let Ok(res) = client
                        .get(format!("{base}{path}"))
                        .bearer_auth(&token)
                        .send()
                        .await
                    {
                        if res.status() == 429 {
                            refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        let _ = res.bytes().await;
                    }
                }
            }));
        }
    }
    let mut workers = Vec::new();
    for w in 0..4 {
        let (client, base, token, paths) = (
            client.clone(),
            base.to_owned(),
            quiet.token.clone(),
            quiet.record_paths.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(w);
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let path = paths.choose(&mut rng).expect("paths");
                let sent = Instant::now();
                if let Ok(res) = client
                    .get(format!("{base}{path}"))
                    .bearer_auth(&token)
                    .send()
                    .await
                {
                    let ok = res.status().is_success();
                    let _ = res.bytes().await;
                    if ok {
                        lat.push(sent.elapsed().as_micros() as u32);
                    }
                }
                // The quiet tenant stays well inside its limit (~4 x 10 req/s).
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            lat
        }));
    }
    let mut quiet = Outcome::default();
    for w in workers {
        quiet.latencies.extend(w.await.unwrap_or_default());
    }
    for f in flooders {
        let _ = f.await;
    }
    (
        quiet.percentile(0.5),
        quiet.percentile(0.99),
        quiet.latencies.len(),
        refused.load(std::sync::atomic::Ordering::Relaxed),
    )
}

/// Provisioning latency: `n` tenants created one at a time.
async fn provision(
    client: &reqwest::Client,
    base: &str,
    staff: &str,
    n: usize,
    isolation: &str,
    label: &str,
) -> anyhow::Result<()> {
    let mut lat = Vec::with_capacity(n);
    let run = uuid::Uuid::now_v7().simple().to_string();
    for i in 0..n {
        let slug = format!("p{}-{isolation}-{i}", &run[run.len() - 6..]);
        let sent = Instant::now();
        post(
            client,
            format!("{base}/api/v1/tenants"),
            Some(staff),
            json!({"name": slug, "slug": slug, "plan": "enterprise", "isolation": isolation}),
            &[],
        )
        .await?;
        lat.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "| {label} | {n} | {:.1} | {:.1} | {:.1} |",
        pct(0.5),
        pct(0.99),
        lat[lat.len() - 1]
    );
    Ok(())
}

async fn noisy(client: &reqwest::Client, base: &str, staff: &str, secs: u64) -> anyhow::Result<()> {
    let plan = json!({"name": "Bench 50", "limits": {"max_users": 10, "max_storage_bytes": 1_000_000_000u64,
                      "api_requests_per_day": null, "requests_per_second": 50}});
    let res = client
        .put(format!("{base}/api/v1/plans/bench-50"))
        .bearer_auth(staff)
        .json(&plan)
        .send()
        .await?;
    anyhow::ensure!(res.status().is_success(), "plan: {}", res.status());
    let mut targets = Vec::new();
    for slug in ["noisy-bench", "quiet-bench"] {
        let target = seed_tenant(
            client.clone(),
            base.to_owned(),
            staff.to_owned(),
            slug.to_owned(),
            "bench-50",
            "shared",
            20,
        )
        .await?;
        targets.push(target);
        // Let the bucket refill after seeding.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let noisy = Some(&targets[0]);
    // Warm-up (connections, caches), not measured.
    quiet_latency(client, base, &targets[1], None, 0, 2).await;
    let (alone50, alone99, n1, _) = quiet_latency(client, base, &targets[1], None, 0, secs).await;
    let (paced50, paced99, n2, refused_paced) =
        quiet_latency(client, base, &targets[1], noisy, 500, secs).await;
    let (flat50, flat99, n3, refused_flat) =
        quiet_latency(client, base, &targets[1], noisy, 0, secs).await;
    let (again50, again99, n4, _) = quiet_latency(client, base, &targets[1], None, 0, secs).await;
    println!("| quiet tenant GET-by-id | p50 ms | p99 ms | requests | flood refused (429) |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!("| alone | {alone50:.2} | {alone99:.2} | {n1} | |");
    println!("| alone again, after the floods | {again50:.2} | {again99:.2} | {n4} | |");
    // Against the better of the two quiet phases: the conservative ratio.
    let alone99 = alone99.min(again99);
    println!(
        "| neighbour at 10x its limit (500 req/s, limit 50/s) | {paced50:.2} | {paced99:.2} | {n2} | {refused_paced} |"
    );
    println!(
        "| neighbour flat out ({FLOOD_CONNECTIONS} connections) | {flat50:.2} | {flat99:.2} | {n3} | {refused_flat} |"
    );
    let ratio = |p99: f64| p99 / alone99.max(0.001);
    println!(
        "\nquiet p99 ratio: neighbour at 10x {:.2}, flat out {:.2}",
        ratio(paced99),
        ratio(flat99)
    );
    Ok(())
}

/// The server's resident memory, in MB (Linux).
fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Polls a job to its end; returns it with the seconds it took and the
/// server's peak RSS growth meanwhile (MB over the RSS when it started).
async fn run_job(
    client: &reqwest::Client,
    base: &str,
    staff: &str,
    accepted: Value,
    pid: u32,
) -> anyhow::Result<(Value, f64, f64)> {
    let id = accepted["job_id"].as_str().unwrap_or_default().to_owned();
    let (started, before) = (Instant::now(), rss_mb(pid));
    let mut peak = before;
    loop {
        let job: Value = client
            .get(format!("{base}/api/v1/jobs/{id}"))
            .bearer_auth(staff)
            .send()
            .await?
            .json()
            .await?;
        peak = peak.max(rss_mb(pid));
        match job["status"].as_str() {
            Some("succeeded") => return Ok((job, started.elapsed().as_secs_f64(), peak - before)),
            Some("failed") => anyhow::bail!("job failed: {job}"),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Export, import and two online moves of one tenant of `records` records.
async fn mobility(
    client: &reqwest::Client,
    base: &str,
    staff: &str,
    records: usize,
    isolation: &'static str,
    label: &str,
    pid: u32,
) -> anyhow::Result<()> {
    let run = uuid::Uuid::now_v7().simple().to_string();
    let slug = format!("m{}-{isolation}", &run[run.len() - 6..]);
    let target = seed_tenant(
        client.clone(),
        base.to_owned(),
        staff.to_owned(),
        slug.clone(),
        "custom",
        isolation,
        0,
    )
    .await?;
    let token = Arc::new(target.token);
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut seeding = Vec::with_capacity(records);
    for n in 0..records {
        let permit = sem.clone().acquire_owned().await?;
        let (client, base, token) = (client.clone(), base.to_owned(), token.clone());
        seeding.push(tokio::spawn(async move {
            // The tenant's plan allows 1,000 requests a second: a 429 is
            // the limit doing its job, so wait and send again.
            let body = json!({"title": format!("Complaint {n}"), "status": if n % 3 == 0 { "resolved" } else { "open" }, "ward": n % 7});
            let r = loop {
                match post(&client, format!("{base}/api/v1/collections/complaints/records"), Some(&token), body.clone(), &[]).await {
                    Err(e) if e.to_string().starts_with("429") => tokio::time::sleep(Duration::from_millis(50)).await,
                    other => break other,
                }
            };
            drop(permit);
            r
        }));
    }
    for h in seeding {
        h.await??;
    }

    let accepted = post(
        client,
        format!("{base}/api/v1/tenants/{slug}/export"),
        Some(staff),
        json!({}),
        &[],
    )
    .await?;
    let (job, export_s, export_mb) = run_job(client, base, staff, accepted, pid).await?;
    let file = client
        .get(format!(
            "{base}{}",
            job["result_url"].as_str().unwrap_or_default()
        ))
        .bearer_auth(staff)
        .send()
        .await?
        .bytes()
        .await?;
    let copy = format!("{slug}-copy");
    post(
        client,
        format!("{base}/api/v1/tenants"),
        Some(staff),
        json!({"name": copy, "slug": copy, "plan": "custom", "isolation": isolation}),
        &[],
    )
    .await?;
    let res = client
        .post(format!("{base}/api/v1/tenants/{copy}/import"))
        .bearer_auth(staff)
        .header("content-type", "application/x-ndjson")
        .body(file.clone())
        .send()
        .await?;
    anyhow::ensure!(res.status().is_success(), "import: {}", res.status());
    let accepted: Value = res.json().await?;
    let (_, import_s, import_mb) = run_job(client, base, staff, accepted, pid).await?;

    // Four writers, paced to a light load, while the tenant moves away and back.
    let other = if isolation == "shared" {
        "dedicated"
    } else {
        "shared"
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (client, base, token) = (client.clone(), base.to_owned(), token.clone());
            let (stop, latencies, errors) = (stop.clone(), latencies.clone(), errors.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let sent = Instant::now();
                    match post(
                        &client,
                        format!("{base}/api/v1/collections/moving/records"),
                        Some(&token),
                        json!({"n": 1}),
                        &[],
                    )
                    .await
                    {
                        Ok(_) => latencies
                            .lock()
                            .await
                            .push(sent.elapsed().as_secs_f64() * 1000.0),
                        Err(_) => {
                            errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    let mut move_s = Vec::new();
    for to in [other, isolation] {
        let accepted = post(
            client,
            format!("{base}/api/v1/tenants/{slug}/move"),
            Some(staff),
            json!({"isolation": to}),
            &[],
        )
        .await?;
        move_s.push(run_job(client, base, staff, accepted, pid).await?.1);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await?;
    }
    let mut lat = latencies.lock().await.clone();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let per_s = |s: f64| records as f64 / s;
    println!(
        "| {label} | {records} | {:.0} | {export_mb:.0} | {} | {:.0} | {import_mb:.0} | {:.1} / {:.1} | {} | {:.1} | {:.1} | {} |",
        per_s(export_s),
        file.len() / 1_000_000,
        per_s(import_s),
        move_s[0],
        move_s[1],
        lat.len(),
        pct(0.99),
        lat.last().copied().unwrap_or(f64::NAN),
        errors.load(std::sync::atomic::Ordering::Relaxed),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 4,
        "usage: load <base-url> <admin-email> <admin-password> [tenants] [records] [seconds] [connections]"
    );
    let base = args[1].trim_end_matches('/').to_owned();
    let arg = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (tenants, records, secs, conns, dedicated_every) = (
        arg(4, 1000),
        arg(5, 20),
        arg(6, 10) as u64,
        arg(7, 32),
        arg(8, 2),
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(conns)
        .build()?;
    let login = post(
        &client,
        format!("{base}/api/v1/auth/login"),
        None,
        json!({"email": args[2], "password": args[3]}),
        &[],
    )
    .await?;
    let staff = login["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if args.get(4).map(String::as_str) == Some("provision") {
        let n = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(200);
        let isolation = args.get(6).map_or("shared", String::as_str);
        let label = args.get(7).map_or(isolation, String::as_str);
        return provision(&client, &base, &staff, n.max(1), isolation, label).await;
    }
    if args.get(4).map(String::as_str) == Some("mobility") {
        let records = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(100_000);
        let isolation = if args.get(6).map(String::as_str) == Some("dedicated") {
            "dedicated"
        } else {
            "shared"
        };
        let label = args.get(7).map_or(isolation, String::as_str);
        let pid = args.get(8).and_then(|s| s.parse().ok()).unwrap_or(0);
        return mobility(&client, &base, &staff, records, isolation, label, pid).await;
    }
    if args.get(4).map(String::as_str) == Some("noisy") {
        let secs = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(10);
        return noisy(&client, &base, &staff, secs).await;
    }

    let started = Instant::now();
    let bar = indicatif::ProgressBar::new(tenants as u64);
    bar.set_style(indicatif::ProgressStyle::with_template(
        "seeding {bar:40} {pos}/{len} tenants ({elapsed})",
    )?);
    let mut seeded = Vec::with_capacity(tenants);
    let sem = Arc::new(tokio::sync::Semaphore::new(conns));
    let mut handles = Vec::new();
    for i in 0..tenants {
        let permit = sem.clone().acquire_owned().await?;
        let (client, base, staff, bar) = (client.clone(), base.clone(), staff.clone(), bar.clone());
        handles.push(tokio::spawn(async move {
            let isolation = if dedicated_every > 0 && i % dedicated_every == dedicated_every - 1 {
                "dedicated"
            } else {
                "shared"
            };
            let r = seed_tenant(
                client,
                base,
                staff,
                format!("bench-{i}"),
                "custom",
                isolation,
                records,
            )
            .await;
            bar.inc(1);
            drop(permit);
            r
        }));
    }
    for h in handles {
        seeded.push(h.await??);
    }
    bar.finish();
    println!(
        "seeded {tenants} tenants x {records} records in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let targets = Arc::new(seeded);
    // LOAD_ONLY=get-by-id (comma-separated names) runs only those, e.g.
    // to profile one endpoint; the ratio column needs healthz among them.
    let only = std::env::var("LOAD_ONLY").ok();
    let accesses: &[(Access, &str)] = match std::env::var("ACCESS").as_deref() {
        Ok("zipf") => &[(Access::Zipf, " (zipf)")],
        Ok("both") => &[(Access::Uniform, " (uniform)"), (Access::Zipf, " (zipf)")],
        Ok("uniform") | Err(_) => &[(Access::Uniform, "")],
        Ok(other) => anyhow::bail!("ACCESS={other}: uniform, zipf or both"),
    };
    let kinds: Vec<((Kind, Access), String)> = [
        (Kind::Healthz, "healthz"),
        (Kind::GetById, "get-by-id"),
        (Kind::List, "list-50"),
        (Kind::Create, "create"),
    ]
    .into_iter()
    .filter(|(_, name)| {
        only.as_ref()
            .is_none_or(|o| o.split(',').any(|n| n == *name))
    })
    .flat_map(|(kind, name)| {
        // /healthz touches no tenant: once is enough.
        let accesses = if matches!(kind, Kind::Healthz) {
            &accesses[..1]
        } else {
            accesses
        };
        accesses
            .iter()
            .map(move |(access, label)| ((kind, *access), format!("{name}{label}")))
    })
    .collect();
    anyhow::ensure!(
        !kinds.is_empty(),
        "LOAD_ONLY names none of healthz, get-by-id, list-50, create"
    );
    // The endpoints take turns in ROUNDS short slices rather than one long
    // phase each: the machine's speed drifts over a run, and interleaving
    // lets every endpoint (the /healthz ceiling included) see the same drift.
    let slice = Duration::from_secs(secs).div_f64(ROUNDS as f64);
    let mut results: Vec<Outcome> = kinds.iter().map(|_| Outcome::default()).collect();
    for _ in 0..ROUNDS {
        for ((kind, _), total) in kinds.iter().zip(&mut results) {
            total.add(measure(&client, &base, &targets, *kind, slice, conns).await);
        }
    }
    let ceiling = match kinds[0] {
        ((Kind::Healthz, _), _) => results[0].rps(),
        _ => f64::NAN,
    };
    println!("\n| endpoint | req/s | % of /healthz | p50 ms | p99 ms | errors |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for ((_, name), r) in kinds.iter().zip(&mut results) {
        let rps = r.rps();
        println!(
            "| {} | {:.0} | {:.0}% | {:.2} | {:.2} | {} |",
            name,
            rps,
            rps * 100.0 / ceiling,
            r.percentile(0.50),
            r.percentile(0.99),
            r.errors
        );
    }
    Ok(())
}

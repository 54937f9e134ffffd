//! Opening the object store a storage URL names: `file://`, `memory://`,
//! `s3://`, `gs://`, `az://`, with the server-side encryption the operator
//! asked for and, for the cloud stores, a signer for presigned reads.
//!
//! Credentials and endpoints come from the environment, through each
//! builder's `from_env` (`AWS_*`, `GOOGLE_*`, `AZURE_*`, see
//! docs/storage-layout.md); never from the URL, which is logged.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::signer::Signer;

use super::presign::Presigner;
use crate::error::HubError;

/// Server-side encryption at rest of every object the hub writes.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Encryption {
    /// Whatever the bucket or container is configured with (S3 and GCS
    /// encrypt everything at rest by default; a bucket's default KMS key
    /// applies).
    #[default]
    StoreDefault,
    /// S3: SSE-S3 (`AES256`, keys managed by S3).
    S3Managed,
    /// S3: SSE-KMS with this key id or ARN (`None`: the account's `aws/s3` key).
    S3Kms { key_id: Option<String>, bucket_key: bool },
    /// S3: DSSE-KMS (two layers) with this key id or ARN.
    S3DsseKms { key_id: Option<String> },
    /// Azure: a customer-provided key (base64 of 32 bytes), sent on every
    /// request; reads cannot be redirected (a presigned URL cannot carry it).
    AzureCustomerKey(String),
}

impl std::fmt::Debug for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Encryption {
    /// For the startup log: never the Azure key itself.
    pub fn describe(&self) -> String {
        match self {
            Encryption::StoreDefault => "the store's default".to_string(),
            Encryption::S3Managed => "SSE-S3 (AES256)".to_string(),
            Encryption::S3Kms { key_id, bucket_key } => format!(
                "SSE-KMS with key {}{}",
                key_id.as_deref().unwrap_or("aws/s3 (the account default)"),
                if *bucket_key { ", S3 bucket key" } else { "" }
            ),
            Encryption::S3DsseKms { key_id } => {
                format!("DSSE-KMS with key {}", key_id.as_deref().unwrap_or("aws/s3 (the account default)"))
            }
            Encryption::AzureCustomerKey(_) => "Azure customer-provided key".to_string(),
        }
    }

    fn scheme(&self) -> Option<&'static str> {
        match self {
            Encryption::StoreDefault => None,
            Encryption::S3Managed | Encryption::S3Kms { .. } | Encryption::S3DsseKms { .. } => Some("s3"),
            Encryption::AzureCustomerKey(_) => Some("az"),
        }
    }
}

/// What [`open`] opened.
pub(crate) struct Opened {
    pub store: Arc<dyn ObjectStore>,
    /// Safe to log: no credentials.
    pub description: String,
    /// Presigns reads, for the cloud stores.
    pub presigner: Option<Presigner>,
}

/// Opens the store a `file:///DIR`, `memory://`, `s3://BUCKET[/PREFIX]`,
/// `gs://BUCKET[/PREFIX]` or `az://CONTAINER[/PREFIX]` URL names.
pub(crate) fn open(url: &str, encryption: &Encryption) -> Result<Opened, HubError> {
    let invalid = |reason: &str| HubError::InvalidStorageUrl { url: url.to_string(), reason: reason.to_string() };
    let scheme = url.split_once("://").map_or(url, |(s, _)| s).trim_end_matches(':');
    if let Some(wanted) = encryption.scheme()
        && scheme != wanted
    {
        return Err(invalid(&format!("{} applies to {wanted}:// storage only", encryption.describe())));
    }
    if url == "memory://" || url == "memory:" {
        return Ok(local(Arc::new(InMemory::new()), "memory://".to_string()));
    }
    if let Some(rest) = url.strip_prefix("file://") {
        let (store, description) = super::open_dir(url, rest)?;
        return Ok(local(store, description));
    }
    let parsed = url::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
    if parsed.scheme() == "memory" {
        return Ok(local(Arc::new(InMemory::new()), "memory://".to_string()));
    }
    let usage = match parsed.scheme() {
        "s3" => "s3://BUCKET[/PREFIX]",
        "gs" => "gs://BUCKET[/PREFIX]",
        "az" => "az://CONTAINER[/PREFIX]",
        _ => return Err(HubError::UnsupportedStorage(url.to_string())),
    };
    let bucket = parsed
        .host_str()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| invalid(&format!("missing bucket: {usage}")))?
        .to_string();
    if !parsed.username().is_empty() || parsed.password().is_some() || parsed.query().is_some() {
        return Err(invalid("credentials and options do not belong in the URL; set them in the environment"));
    }
    let prefix = parsed.path().trim_matches('/').to_string();
    let built = |source| HubError::Storage { url: url.to_string(), source };
    let (store, signer): (Arc<dyn ObjectStore>, Arc<dyn Signer>) = match parsed.scheme() {
        "s3" => {
            let s3 = Arc::new(
                s3_encryption(AmazonS3Builder::from_env(), encryption)?
                    .with_bucket_name(&bucket)
                    .build()
                    .map_err(built)?,
            );
            (s3.clone(), s3)
        }
        "gs" => {
            let gcs = Arc::new(GoogleCloudStorageBuilder::from_env().with_bucket_name(&bucket).build().map_err(built)?);
            (gcs.clone(), gcs)
        }
        _ => {
            let mut b = MicrosoftAzureBuilder::from_env().with_container_name(&bucket);
            if let Encryption::AzureCustomerKey(key) = encryption {
                b = b.with_config(AzureConfigKey::EncryptionKey, key);
            }
            let az = Arc::new(b.build().map_err(built)?);
            (az.clone(), az)
        }
    };
    let scheme = parsed.scheme();
    let readable = !matches!(encryption, Encryption::AzureCustomerKey(_));
    if prefix.is_empty() {
        let presigner = readable.then(|| Presigner::new(signer, None));
        Ok(Opened { store, description: format!("{scheme}://{bucket}"), presigner })
    } else {
        let prefix_path = Path::from(prefix.as_str());
        let presigner = readable.then(|| Presigner::new(signer, Some(prefix_path.clone())));
        let store: Arc<dyn ObjectStore> = Arc::new(PrefixStore::new(store, prefix_path));
        Ok(Opened { store, description: format!("{scheme}://{bucket}/{prefix}"), presigner })
    }
}

fn local(store: Arc<dyn ObjectStore>, description: String) -> Opened {
    Opened { store, description, presigner: None }
}

/// The S3 encryption settings, as the `aws_server_side_encryption`,
/// `aws_sse_kms_key_id` and `aws_sse_bucket_key_enabled` options (the same
/// ones `AWS_SERVER_SIDE_ENCRYPTION` … set from the environment; flags win).
fn s3_encryption(b: AmazonS3Builder, encryption: &Encryption) -> Result<AmazonS3Builder, HubError> {
    let key = |name: &str| -> Result<AmazonS3ConfigKey, HubError> {
        name.parse().map_err(|source| HubError::Storage { url: "s3://".to_string(), source })
    };
    Ok(match encryption {
        Encryption::S3Managed => b.with_config(key("aws_server_side_encryption")?, "AES256"),
        Encryption::S3Kms { key_id, bucket_key } => {
            let mut b = b.with_config(key("aws_server_side_encryption")?, "aws:kms");
            if let Some(id) = key_id {
                b = b.with_config(key("aws_sse_kms_key_id")?, id);
            }
            if *bucket_key {
                b = b.with_bucket_key(true);
            }
            b
        }
        Encryption::S3DsseKms { key_id } => {
            let mut b = b.with_config(key("aws_server_side_encryption")?, "aws:kms:dsse");
            if let Some(id) = key_id {
                b = b.with_config(key("aws_sse_kms_key_id")?, id);
            }
            b
        }
        Encryption::StoreDefault | Encryption::AzureCustomerKey(_) => b,
    })
}

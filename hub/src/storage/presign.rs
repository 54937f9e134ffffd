//! Presigned read URLs: what `--redirect-reads` answers a pack read with,
//! so readers fetch the bytes from the store and not through the hub.
//!
//! The signer is the store's own client (S3 SigV4 query signing, a GCS V4
//! signature with the service account's key, an Azure service SAS with the
//! account key or a user delegation key). The keys the hub uses are relative
//! to the URL's prefix; the signer needs the full object path.

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::signer::{Method, Signer};

/// Signs GET URLs for keys of the hub's store.
#[derive(Clone, Debug)]
pub struct Presigner {
    signer: Arc<dyn Signer>,
    prefix: Option<Path>,
}

impl Presigner {
    /// `prefix`: the part of the storage URL after the bucket, if any.
    pub fn new(signer: Arc<dyn Signer>, prefix: Option<Path>) -> Self {
        Self { signer, prefix }
    }

    /// A URL anyone may GET `key` with (and send a `Range`) until `expires_in` passes.
    pub(crate) async fn get_url(&self, key: &Path, expires_in: Duration) -> Result<url::Url, object_store::Error> {
        let full = match &self.prefix {
            Some(p) => Path::from_iter(p.parts().chain(key.parts())),
            None => key.clone(),
        };
        self.signer.signed_url(Method::GET, &full, expires_in).await
    }
}

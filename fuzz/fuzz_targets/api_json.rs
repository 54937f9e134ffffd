//! The hub API's JSON bodies: the requests a hub reads from any client, and
//! the answers and stored records a client or a hub replica reads back.
//! Parsing never panics, and whatever parses serializes to JSON that parses
//! to the same value and serializes identically (nothing is lost or
//! invented, and every name, tag and digest inside was validated).
#![no_main]

use aetherfs_format::api::{
    DatasetList, ErrorBody, GcReport, GcRequest, Lease, LeaseList, LeaseRequest, ManifestStored, MissingChunksRequest,
    MissingChunksResponse, PackStored, SetTagRequest, TagHistory, TagList, TagRecord, VersionList, VersionServed,
};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Parses `data` as a `T`; if it parses, checks the round trip.
fn check<T: Serialize + DeserializeOwned>(data: &[u8]) -> Option<T> {
    let v: T = serde_json::from_slice(data).ok()?;
    let once = serde_json::to_string(&v).expect("a parsed body serializes");
    let back: T = serde_json::from_str(&once).unwrap_or_else(|e| panic!("{once} does not parse back: {e}"));
    assert_eq!(serde_json::to_string(&back).expect("serializes"), once, "the round trip changed the body");
    Some(v)
}

fuzz_target!(|data: &[u8]| {
    // Requests (PUT …/tags/{tag}, POST …/chunks/missing, POST /v1/gc, PUT …/leases/{reader}).
    check::<SetTagRequest>(data);
    if let Some(r) = check::<MissingChunksRequest>(data) {
        assert!(r.digests.iter().all(|d| d.to_string().parse() == Ok(*d)));
    }
    check::<GcRequest>(data);
    check::<LeaseRequest>(data);
    check::<VersionServed>(data);
    // Answers and stored records.
    check::<ErrorBody>(data);
    check::<TagRecord>(data);
    check::<Lease>(data);
    check::<LeaseList>(data);
    check::<MissingChunksResponse>(data);
    check::<DatasetList>(data);
    check::<TagList>(data);
    check::<VersionList>(data);
    check::<TagHistory>(data);
    check::<PackStored>(data);
    check::<ManifestStored>(data);
    check::<GcReport>(data);
});

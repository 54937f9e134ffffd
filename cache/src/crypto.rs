//! Subkeys, entry ids, and sealing and opening entries.

use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::aead::{Generate, Nonce, Tag};
use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};
use aetherfs_format::Digest;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::CacheError;
use super::layout::{ENTRY_HEADER_LEN, EntryHeader, EntryId, KEY_CHECK_LEN, NONCE_LEN, TAG_LEN};

/// HKDF info of the AES-256-GCM key.
const AEAD_INFO: &[u8] = b"aetherfs cache v1";
/// HKDF info of the BLAKE3 key that turns digests into entry ids.
const ID_INFO: &[u8] = b"aetherfs cache v1 entry id";
/// The plaintext of the key-check value in the metadata file.
pub(super) const KEY_CHECK_PLAIN: &[u8; 32] = b"aetherfs cache key check value\0\0";
const KEY_CHECK_AAD: &[u8] = b"aetherfs cache key check";
// The layout fixes the value's length; the plaintext must fill it less the tag.
const _: () = assert!(KEY_CHECK_PLAIN.len() + TAG_LEN == KEY_CHECK_LEN);

/// The keys of one cache directory, derived from the master key and the
/// directory's salt. Wiped from memory on drop.
pub(super) struct Keys {
    aead: Aes256Gcm,
    id_key: Zeroizing<[u8; 32]>,
}

/// Fills `out` from the operating system's CSPRNG.
pub(super) fn random<const N: usize>() -> Result<Zeroizing<[u8; N]>, CacheError> {
    <[u8; N]>::try_generate().map(Zeroizing::new).map_err(|e| CacheError::Randomness(Box::new(e)))
}

impl Keys {
    pub fn derive(master: &[u8; 32], salt: &[u8; 32]) -> Result<Self, CacheError> {
        let hk = Hkdf::<Sha256>::new(Some(salt), master);
        let mut aead_key = Zeroizing::new([0u8; 32]);
        let mut id_key = Zeroizing::new([0u8; 32]);
        hk.expand(AEAD_INFO, aead_key.as_mut_slice()).map_err(|e| CacheError::KeyDerivation(Box::new(e)))?;
        hk.expand(ID_INFO, id_key.as_mut_slice()).map_err(|e| CacheError::KeyDerivation(Box::new(e)))?;
        let aead =
            Aes256Gcm::new_from_slice(aead_key.as_slice()).map_err(|e| CacheError::KeyDerivation(Box::new(e)))?;
        Ok(Self { aead, id_key })
    }

    pub fn entry_id(&self, digest: &Digest) -> EntryId {
        EntryId(*blake3::keyed_hash(&self.id_key, digest.as_bytes()).as_bytes())
    }

    /// An entry ready to append: its header, then `plain` encrypted under a
    /// fresh random nonce with the digest as associated data, then the tag.
    /// The plaintext is encrypted straight into the returned buffer.
    pub fn seal(&self, id: EntryId, digest: &Digest, plain: &[u8]) -> Result<Vec<u8>, CacheError> {
        let clen = plain
            .len()
            .checked_add(TAG_LEN)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or(CacheError::ChunkTooLarge { len: plain.len() })?;
        let nonce = Nonce::<Aes256Gcm>::try_generate().map_err(|e| CacheError::Randomness(Box::new(e)))?;
        let mut buf = vec![0u8; ENTRY_HEADER_LEN + plain.len() + TAG_LEN];
        let (header, body) = buf.split_at_mut(ENTRY_HEADER_LEN);
        let (ct, tag_out) = body.split_at_mut(plain.len());
        let inout = InOutBuf::new(plain, ct).map_err(CacheError::SealBuffer)?;
        let tag = self.aead.encrypt_inout_detached(&nonce, digest.as_bytes(), inout).map_err(CacheError::Seal)?;
        tag_out.copy_from_slice(&tag);
        header.copy_from_slice(&EntryHeader { clen, id, nonce: nonce.into() }.encode());
        Ok(buf)
    }

    /// Decrypts `ct` (ciphertext then tag) in place; on success the first
    /// returned-length bytes of `ct` are the plaintext. The plaintext is not
    /// hashed again: the tag, with the digest as associated data, proves that
    /// a holder of this cache's key sealed these bytes for this digest, and
    /// the cache seals only bytes already checked against their digest (see
    /// "Why reads do not re-hash" in `docs/cache.md`).
    pub fn open(&self, digest: &Digest, nonce: &[u8; NONCE_LEN], ct: &mut [u8]) -> Result<usize, &'static str> {
        let plen = ct.len().checked_sub(TAG_LEN).ok_or("entry shorter than a tag")?;
        let (msg, tag) = ct.split_at_mut(plen);
        let tag = Tag::<Aes256Gcm>::try_from(&*tag).map_err(|_| "bad tag length")?;
        let nonce = Nonce::<Aes256Gcm>::from(*nonce);
        self.aead
            .decrypt_inout_detached(&nonce, digest.as_bytes(), msg.into(), &tag)
            .map_err(|_| "authentication failed")?;
        Ok(plen)
    }

    /// A fresh key-check value: the fixed plaintext sealed under the AEAD key.
    pub fn key_check(&self) -> Result<([u8; NONCE_LEN], [u8; KEY_CHECK_LEN]), CacheError> {
        let nonce = Nonce::<Aes256Gcm>::try_generate().map_err(|e| CacheError::Randomness(Box::new(e)))?;
        let mut out = [0u8; KEY_CHECK_LEN];
        let (msg, tag_out) = out.split_at_mut(KEY_CHECK_PLAIN.len());
        msg.copy_from_slice(KEY_CHECK_PLAIN);
        let tag = self.aead.encrypt_inout_detached(&nonce, KEY_CHECK_AAD, msg.into()).map_err(CacheError::Seal)?;
        tag_out.copy_from_slice(&tag);
        Ok((nonce.into(), out))
    }

    /// Whether a key-check value was made with these keys.
    pub fn verify_key_check(&self, nonce: &[u8; NONCE_LEN], value: &[u8; KEY_CHECK_LEN]) -> bool {
        let mut v = *value;
        let (msg, tag) = v.split_at_mut(KEY_CHECK_PLAIN.len());
        let Ok(tag) = Tag::<Aes256Gcm>::try_from(&*tag) else { return false };
        let nonce = Nonce::<Aes256Gcm>::from(*nonce);
        self.aead.decrypt_inout_detached(&nonce, KEY_CHECK_AAD, msg.into(), &tag).is_ok() && msg == KEY_CHECK_PLAIN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subkeys_depend_on_master_and_salt() {
        let d = Digest::of(b"chunk");
        let a = Keys::derive(&[1; 32], &[2; 32]).unwrap();
        let same = Keys::derive(&[1; 32], &[2; 32]).unwrap();
        let other_salt = Keys::derive(&[1; 32], &[3; 32]).unwrap();
        let other_master = Keys::derive(&[9; 32], &[2; 32]).unwrap();
        assert!(a.entry_id(&d) == same.entry_id(&d));
        assert!(a.entry_id(&d) != other_salt.entry_id(&d));
        assert!(a.entry_id(&d) != other_master.entry_id(&d));
        assert_ne!(&a.entry_id(&d).0, d.as_bytes(), "ids do not reveal digests");

        let (n, v) = a.key_check().unwrap();
        assert!(same.verify_key_check(&n, &v));
        assert!(!other_salt.verify_key_check(&n, &v));
        assert!(!other_master.verify_key_check(&n, &v));
    }

    #[test]
    fn seal_and_open() {
        let k = Keys::derive(&[1; 32], &[2; 32]).unwrap();
        let plain = b"some chunk bytes".repeat(100);
        let d = Digest::of(&plain);
        let sealed = k.seal(k.entry_id(&d), &d, &plain).unwrap();
        let mut hdr = [0u8; ENTRY_HEADER_LEN];
        hdr.copy_from_slice(&sealed[..ENTRY_HEADER_LEN]);
        let h = EntryHeader::decode(&hdr).unwrap();
        assert_eq!(h.clen as usize, plain.len() + TAG_LEN);
        let mut ct = sealed[ENTRY_HEADER_LEN..].to_vec();
        let n = k.open(&d, &h.nonce, &mut ct).unwrap();
        assert_eq!(&ct[..n], &plain[..]);
        // The digest is bound as associated data.
        let mut ct = sealed[ENTRY_HEADER_LEN..].to_vec();
        assert_eq!(k.open(&Digest::of(b"other"), &h.nonce, &mut ct), Err("authentication failed"));
        let mut ct = sealed[ENTRY_HEADER_LEN..sealed.len() - 1].to_vec();
        assert!(k.open(&d, &h.nonce, &mut ct).is_err());
    }
}

//! MorphCloud transfers over the simulator at the edges of their chunks:
//! every byte value, sizes around the upload and download chunk sizes,
//! several MiB, and directories, each checked in the VM (`sha256sum`) and
//! on the way back; nothing of the staging is left behind.

use bytes::Bytes;
use hecate::provider::morph::{DOWNLOAD_CHUNK_BYTES, UPLOAD_CHUNK_BYTES};
use hecate::{DownloadSpec, DownloadTarget, UploadSource, UploadSpec};
use sha2::{Digest, Sha256};

use crate::files::{Backend, Files as _, Kind};

/// `len` bytes in which every byte value occurs (from 256 on), in an order
/// that is not a plain cycle, so a misplaced chunk shows.
fn every_byte(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
    for (i, b) in out.iter_mut().take(256).enumerate() {
        *b = i as u8;
    }
    out
}

fn hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn round_trip(b: &Backend, path: &str, data: &[u8]) {
    let n = b
        .put("t", path, UploadSource::Bytes(Bytes::copy_from_slice(data)))
        .await
        .unwrap_or_else(|e| panic!("upload of {} bytes: {e}", data.len()));
    assert_eq!(n, data.len() as u64);
    let in_vm = b
        .sh("t", &format!("wc -c < '{path}'; sha256sum < '{path}'"))
        .await;
    assert_eq!(
        in_vm,
        format!("{}\n{}  -\n", data.len(), hex(data)),
        "{path}: {} bytes in the VM",
        data.len()
    );
    let back = b.get("t", path).await.expect("download");
    assert!(
        back[..] == data[..],
        "{path}: {} bytes came back other",
        data.len()
    );
}

/// No staging directory or temporary file is left anywhere in the VM's
/// working directory.
async fn nothing_staged(b: &Backend) {
    assert_eq!(
        b.sh("t", "find . -name '*hecate-tmp*' | wc -l").await,
        "0\n"
    );
}

#[actix_rt::test]
async fn morph_round_trips_every_byte_at_the_chunk_edges() {
    let b = Backend::start(Kind::Sim, &|_| {}).await.expect("simulator");
    let up = UPLOAD_CHUNK_BYTES;
    let down = DOWNLOAD_CHUNK_BYTES;
    for (i, len) in [
        0,
        1,
        256,
        up - 1,
        up,
        up + 1,
        3 * up,
        down - 1,
        down,
        down + 1,
        5 * 1024 * 1024 + 7,
    ]
    .into_iter()
    .enumerate()
    {
        round_trip(&b, &format!("edge/{len}.bin"), &every_byte(len, i as u64)).await;
    }
    // Absolute paths are the VM's own; a name with spaces and quotes.
    let root = b.sh("t", "pwd").await;
    let abs = format!("{}/abs dir/it's.bin", root.trim());
    let data = every_byte(up + 3, 99);
    b.put("t", &abs, UploadSource::Bytes(Bytes::from(data.clone())))
        .await
        .expect("absolute upload");
    assert!(b.get("t", "abs dir/it's.bin").await.expect("relative")[..] == data[..]);
    nothing_staged(&b).await;
    b.stop().await;
}

#[actix_rt::test]
async fn morph_directories_round_trip_over_several_chunks() {
    let b = Backend::start(Kind::Sim, &|_| {}).await.expect("simulator");
    let src = b.scratch("tree");
    let big = every_byte(2 * UPLOAD_CHUNK_BYTES + 5, 7);
    std::fs::create_dir_all(src.join("a/b")).expect("mkdir");
    std::fs::write(src.join("a/b/big.bin"), &big).expect("write");
    std::fs::write(src.join("a/small.txt"), "small\n").expect("write");
    std::fs::write(src.join("empty"), "").expect("write");
    b.rt.upload("t", UploadSpec::new("up/tree", UploadSource::Dir(src)))
        .await
        .expect("dir upload");
    assert_eq!(
        b.sh(
            "t",
            "cd up/tree && find . -type f | sort && sha256sum < a/b/big.bin"
        )
        .await,
        format!("./a/b/big.bin\n./a/small.txt\n./empty\n{}  -\n", hex(&big))
    );
    let dst = b.scratch("back");
    b.rt.download(
        "t",
        DownloadSpec::new("up/tree", DownloadTarget::Dir(dst.clone())),
    )
    .await
    .expect("dir download");
    assert!(std::fs::read(dst.join("a/b/big.bin")).expect("read") == big);
    assert_eq!(
        std::fs::read(dst.join("a/small.txt")).expect("read"),
        b"small\n"
    );
    assert_eq!(std::fs::read(dst.join("empty")).expect("read"), b"");
    nothing_staged(&b).await;
    b.stop().await;
}

//! The part of the `libz-ng-sys` API that `flate2` (feature `zlib-ng`) calls, forwarded to
//! `libz-rs-sys` (zlib-rs, a pure-Rust zlib).
//!
//! Why it exists: pingora-core enables flate2's `zlib-ng` feature, whose `libz-ng-sys` builds
//! zlib-ng from C sources with cmake. With this crate patched in (`[patch.crates-io]` in the
//! workspace manifest) building tapedeck needs only a Rust toolchain.
//!
//! Layout: [`z_stream`] is declared with the field types `flate2` writes (non-optional allocator
//! callbacks, `*mut` input pointer) but has exactly the memory layout of zlib-rs's `z_stream`
//! (checked at compile time below), so a pointer to one is passed as a pointer to the other. The
//! stream is always initialised through `deflateInit2_`/`inflateInit2_` with this crate's
//! `zlibVersion()` and `size_of::<z_stream>()`, which zlib-rs checks.
//!
//! No symbol is exported: the functions are ordinary Rust items (libz-rs-sys without its
//! `export-symbols` feature), so nothing clashes with a C zlib linked into the same program.
#![allow(non_camel_case_types, non_snake_case, clippy::missing_safety_doc)]

use libz_rs_sys as rs;
use std::os::raw::{c_char, c_int, c_uint, c_ulong, c_void};

pub type alloc_func = unsafe extern "C" fn(voidpf, uInt, uInt) -> voidpf;
pub type free_func = unsafe extern "C" fn(voidpf, voidpf);
pub type Bytef = u8;
pub type uInt = c_uint;
pub type uLong = c_ulong;
pub type voidpf = *mut c_void;

/// Opaque compression or decompression state, owned by zlib-rs.
#[derive(Debug)]
pub enum internal_state {}

/// zlib's stream struct, as `flate2` fills it in (see the module docs for the layout contract).
#[repr(C)]
#[derive(Copy, Clone, Debug)]
pub struct z_stream {
    pub next_in: *mut Bytef,
    pub avail_in: uInt,
    pub total_in: uLong,
    pub next_out: *mut Bytef,
    pub avail_out: uInt,
    pub total_out: uLong,
    pub msg: *mut c_char,
    pub state: *mut internal_state,
    pub zalloc: alloc_func,
    pub zfree: free_func,
    pub opaque: voidpf,
    pub data_type: c_int,
    pub adler: uLong,
    pub reserved: uLong,
}
pub type z_streamp = *mut z_stream;

// The pointer casts below rely on these: same size, same alignment, fields at the same offsets
// (the allocator callbacks are `Option<fn>` there and `fn` here, which have the same layout).
const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<z_stream>() == size_of::<rs::z_stream>());
    assert!(align_of::<z_stream>() == align_of::<rs::z_stream>());
    assert!(offset_of!(z_stream, next_in) == offset_of!(rs::z_stream, next_in));
    assert!(offset_of!(z_stream, total_in) == offset_of!(rs::z_stream, total_in));
    assert!(offset_of!(z_stream, next_out) == offset_of!(rs::z_stream, next_out));
    assert!(offset_of!(z_stream, total_out) == offset_of!(rs::z_stream, total_out));
    assert!(offset_of!(z_stream, msg) == offset_of!(rs::z_stream, msg));
    assert!(offset_of!(z_stream, state) == offset_of!(rs::z_stream, state));
    assert!(offset_of!(z_stream, zalloc) == offset_of!(rs::z_stream, zalloc));
    assert!(offset_of!(z_stream, zfree) == offset_of!(rs::z_stream, zfree));
    assert!(offset_of!(z_stream, opaque) == offset_of!(rs::z_stream, opaque));
    assert!(offset_of!(z_stream, data_type) == offset_of!(rs::z_stream, data_type));
    assert!(offset_of!(z_stream, adler) == offset_of!(rs::z_stream, adler));
    assert!(offset_of!(z_stream, reserved) == offset_of!(rs::z_stream, reserved));
};

fn cast(strm: z_streamp) -> rs::z_streamp {
    strm.cast()
}

pub use rs::{
    Z_BEST_COMPRESSION, Z_BEST_SPEED, Z_BINARY, Z_BLOCK, Z_BUF_ERROR, Z_DATA_ERROR,
    Z_DEFAULT_COMPRESSION, Z_DEFAULT_STRATEGY, Z_DEFLATED, Z_ERRNO, Z_FILTERED, Z_FINISH, Z_FIXED,
    Z_FULL_FLUSH, Z_HUFFMAN_ONLY, Z_MEM_ERROR, Z_NEED_DICT, Z_NO_COMPRESSION, Z_NO_FLUSH, Z_OK,
    Z_PARTIAL_FLUSH, Z_RLE, Z_STREAM_END, Z_STREAM_ERROR, Z_SYNC_FLUSH, Z_TEXT, Z_TREES, Z_UNKNOWN,
    Z_VERSION_ERROR,
};

pub extern "C" fn zlibVersion() -> *const c_char {
    rs::zlibVersion()
}

pub unsafe extern "C" fn deflateInit2_(
    strm: z_streamp,
    level: c_int,
    method: c_int,
    windowBits: c_int,
    memLevel: c_int,
    strategy: c_int,
    version: *const c_char,
    stream_size: c_int,
) -> c_int {
    unsafe {
        rs::deflateInit2_(
            cast(strm),
            level,
            method,
            windowBits,
            memLevel,
            strategy,
            version,
            stream_size,
        )
    }
}

pub unsafe extern "C" fn deflate(strm: z_streamp, flush: c_int) -> c_int {
    unsafe { rs::deflate(cast(strm), flush) }
}

pub unsafe extern "C" fn deflateEnd(strm: z_streamp) -> c_int {
    unsafe { rs::deflateEnd(cast(strm)) }
}

pub unsafe extern "C" fn deflateReset(strm: z_streamp) -> c_int {
    unsafe { rs::deflateReset(cast(strm)) }
}

pub unsafe extern "C" fn deflateParams(strm: z_streamp, level: c_int, strategy: c_int) -> c_int {
    unsafe { rs::deflateParams(cast(strm), level, strategy) }
}

pub unsafe extern "C" fn deflateSetDictionary(
    strm: z_streamp,
    dictionary: *const Bytef,
    dictLength: uInt,
) -> c_int {
    unsafe { rs::deflateSetDictionary(cast(strm), dictionary, dictLength) }
}

pub unsafe extern "C" fn inflateInit2_(
    strm: z_streamp,
    windowBits: c_int,
    version: *const c_char,
    stream_size: c_int,
) -> c_int {
    unsafe { rs::inflateInit2_(cast(strm), windowBits, version, stream_size) }
}

pub unsafe extern "C" fn inflate(strm: z_streamp, flush: c_int) -> c_int {
    unsafe { rs::inflate(cast(strm), flush) }
}

pub unsafe extern "C" fn inflateEnd(strm: z_streamp) -> c_int {
    unsafe { rs::inflateEnd(cast(strm)) }
}

pub unsafe extern "C" fn inflateReset2(strm: z_streamp, windowBits: c_int) -> c_int {
    unsafe { rs::inflateReset2(cast(strm), windowBits) }
}

pub unsafe extern "C" fn inflateSetDictionary(
    strm: z_streamp,
    dictionary: *const Bytef,
    dictLength: uInt,
) -> c_int {
    unsafe { rs::inflateSetDictionary(cast(strm), dictionary, dictLength) }
}

#[cfg(test)]
mod tests {
    use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
    use std::io::{Read, Write};

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| format!("{{\"id\":{i},\"name\":\"user-{}\"}}\n", i % 97).into_bytes())
            .collect()
    }

    #[test]
    fn gzip_zlib_and_raw_deflate_round_trip_through_flate2() {
        let data = sample();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(&data).expect("gzip write");
        let gz = gz.finish().expect("gzip finish");
        assert!(
            gz.len() < data.len() / 5,
            "compressed {} of {}",
            gz.len(),
            data.len()
        );
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .expect("gunzip");
        assert_eq!(back, data);

        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), Compression::best());
        z.write_all(&data).expect("zlib write");
        let z = z.finish().expect("zlib finish");
        let mut back = Vec::new();
        flate2::read::ZlibDecoder::new(&z[..])
            .read_to_end(&mut back)
            .expect("inflate");
        assert_eq!(back, data);

        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), Compression::fast());
        raw.write_all(&data).expect("deflate write");
        let raw = raw.finish().expect("deflate finish");
        let mut back = Vec::new();
        flate2::read::DeflateDecoder::new(&raw[..])
            .read_to_end(&mut back)
            .expect("raw inflate");
        assert_eq!(back, data);
    }

    #[test]
    fn streaming_api_reset_and_damaged_input() {
        let data = sample();
        let mut c = Compress::new(Compression::new(6), true);
        let mut out = Vec::with_capacity(data.len());
        c.compress_vec(&data, &mut out, FlushCompress::Finish)
            .expect("compress");
        assert_eq!(c.total_in() as usize, data.len());
        let mut d = Decompress::new(true);
        let mut back = Vec::with_capacity(data.len() + 16);
        d.decompress_vec(&out, &mut back, FlushDecompress::Finish)
            .expect("decompress");
        assert_eq!(back, data);

        // Reset reuses the state for a second stream.
        c.reset();
        let mut again = Vec::with_capacity(data.len());
        c.compress_vec(&data, &mut again, FlushCompress::Finish)
            .expect("compress again");
        assert_eq!(again, out);

        // Damaged input is an error, not a crash.
        let mut bad = out.clone();
        for b in bad.iter_mut().skip(10).take(40) {
            *b ^= 0x5a;
        }
        let mut d = Decompress::new(true);
        let mut sink = Vec::with_capacity(data.len());
        assert!(d
            .decompress_vec(&bad, &mut sink, FlushDecompress::Finish)
            .is_err());
    }
}

//! SPDY/3 header block compression: zlib (RFC 1950) with the protocol's
//! [`HEADER_DICTIONARY`], one stream per direction of a connection for its
//! whole life (section 2.6.10.1: the compression context is not reset
//! between frames). Each block a sender emits ends in a sync flush, so the
//! receiver can decode it whole before the next one exists; the receiver
//! feeds every block, in order, to the same decompressor. zlib asks for the
//! dictionary when it reads the first block's header (its FDICT bit and the
//! dictionary's Adler-32), which is when the decompressor is given it.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dictionary::HEADER_DICTIONARY;
use super::SpdyError;

/// Room added to an output buffer each time it fills.
const GROWTH: usize = 1024;

/// Compresses the header blocks this end sends.
pub struct HeaderCompressor {
    zlib: Compress,
}

impl HeaderCompressor {
    pub fn new() -> Result<HeaderCompressor, SpdyError> {
        let mut zlib = Compress::new(Compression::default(), true);
        zlib.set_dictionary(HEADER_DICTIONARY)
            .map_err(|e| SpdyError::Compression(e.to_string()))?;
        Ok(HeaderCompressor { zlib })
    }

    /// `block` compressed and sync-flushed: what goes in the frame.
    pub fn compress(&mut self, block: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let start = self.zlib.total_in();
        let mut out = Vec::with_capacity(block.len() / 2 + GROWTH);
        loop {
            let consumed = usize::try_from(self.zlib.total_in() - start).unwrap_or(block.len());
            if out.len() == out.capacity() {
                out.reserve(GROWTH);
            }
            self.zlib
                .compress_vec(
                    &block[consumed.min(block.len())..],
                    &mut out,
                    FlushCompress::Sync,
                )
                .map_err(|e| SpdyError::Compression(e.to_string()))?;
            let consumed = usize::try_from(self.zlib.total_in() - start).unwrap_or(block.len());
            // A sync flush is complete once all input is taken and zlib
            // stopped with room to spare.
            if consumed >= block.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// Decompresses the header blocks the peer sends.
pub struct HeaderDecompressor {
    zlib: Decompress,
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        HeaderDecompressor::new()
    }
}

impl HeaderDecompressor {
    pub fn new() -> HeaderDecompressor {
        HeaderDecompressor {
            zlib: Decompress::new(true),
        }
    }

    /// The header block that `compressed` holds, at most `limit` bytes.
    pub fn decompress(&mut self, compressed: &[u8], limit: usize) -> Result<Vec<u8>, SpdyError> {
        let start = self.zlib.total_in();
        let mut out = Vec::with_capacity((compressed.len() * 4).clamp(64, limit.max(64)));
        loop {
            let consumed_before = usize::try_from(self.zlib.total_in() - start)
                .map_err(|_| SpdyError::Compression("zlib counted past the block".into()))?;
            let produced_before = out.len();
            if out.len() == out.capacity() {
                if out.len() >= limit {
                    return Err(SpdyError::HeaderBlockTooLarge(limit));
                }
                out.reserve(GROWTH.max(out.len()).min(limit - out.len()).max(1));
            }
            let input = compressed
                .get(consumed_before..)
                .ok_or_else(|| SpdyError::Compression("zlib counted past the block".into()))?;
            let result = self
                .zlib
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            match result {
                Ok(Status::StreamEnd) => {
                    // The peer ended its zlib stream: no later block could
                    // be read, so this one must be the last thing it sends.
                }
                Ok(Status::Ok | Status::BufError) => {}
                Err(e) => match e.needs_dictionary() {
                    Some(_) => {
                        self.zlib.set_dictionary(HEADER_DICTIONARY).map_err(|e| {
                            SpdyError::Compression(format!(
                                "the header block names a dictionary other than SPDY/3's: {e}"
                            ))
                        })?;
                        continue;
                    }
                    None => return Err(SpdyError::Compression(e.to_string())),
                },
            }
            let consumed = usize::try_from(self.zlib.total_in() - start)
                .map_err(|_| SpdyError::Compression("zlib counted past the block".into()))?;
            if out.len() > limit {
                return Err(SpdyError::HeaderBlockTooLarge(limit));
            }
            if consumed >= compressed.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            if consumed == consumed_before
                && out.len() == produced_before
                && out.len() < out.capacity()
            {
                return Err(SpdyError::Compression(
                    "the compressed header block is cut short".into(),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header block as the draft lays it out (section 2.6.10): the
    /// number of pairs, then each name and value with a 32-bit length.
    fn block(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_be_bytes().to_vec();
        for (name, value) in pairs {
            out.extend_from_slice(&(name.len() as u32).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out
    }

    #[test]
    fn the_dictionary_is_the_drafts() {
        assert_eq!(HEADER_DICTIONARY.len(), 1423);
        assert_eq!(&HEADER_DICTIONARY[..11], b"\0\0\0\x07options");
        assert!(HEADER_DICTIONARY.ends_with(b"charset=iso-8859-1,utf-,*,enq=0."));
    }

    /// Two consecutive blocks from one zlib stream (CPython's zlib 1.2.13,
    /// level 9 as Go's framer uses, the SPDY/3 dictionary, a sync flush
    /// after each), as kubectl sends a port-forward's error stream and then
    /// its data stream. The first names the dictionary (FDICT, id
    /// 0xe3c6a7c2); the second only decodes with the first's state.
    #[test]
    fn blocks_a_real_zlib_compressed_with_the_dictionary_are_decoded_in_order() {
        let first = [
            0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x02, 0xa6, 0x23, 0x46, 0x70, 0x3a, 0x2b, 0x29,
            0x4a, 0x4d, 0xcc, 0x85, 0x16, 0x25, 0xac, 0xa9, 0xa0, 0x80, 0x06, 0x00, 0x00, 0x00,
            0xff, 0xff,
        ];
        let second = [
            0x02, 0xa5, 0x47, 0x48, 0xd1, 0x5c, 0x04, 0xce, 0x05, 0x16, 0x06, 0x16, 0x06, 0x40,
            0x9a, 0xb3, 0x08, 0x12, 0x95, 0x99, 0xa0, 0x24, 0xce, 0x68, 0x80, 0xa1, 0x19, 0x54,
            0x0e, 0x25, 0x02, 0x00, 0x00, 0x00, 0xff, 0xff,
        ];
        let mut d = HeaderDecompressor::new();
        assert_eq!(
            d.decompress(&first, 1 << 16).unwrap(),
            block(&[("streamtype", "error")])
        );
        assert_eq!(
            d.decompress(&second, 1 << 16).unwrap(),
            block(&[("port", "8080"), ("requestid", "0"), ("streamtype", "data")])
        );
        // Alone, the second block refers to a history it does not have.
        let mut fresh = HeaderDecompressor::new();
        assert!(fresh.decompress(&second, 1 << 16).is_err());
    }

    #[test]
    fn blocks_round_trip_through_one_stateful_pair() {
        let mut c = HeaderCompressor::new().unwrap();
        let mut d = HeaderDecompressor::new();
        let long = "x".repeat(5000);
        let blocks = [
            block(&[]),
            block(&[("streamtype", "stdout")]),
            block(&[("streamtype", "stdout")]),
            block(&[("big", long.as_str())]),
        ];
        let mut sizes = Vec::new();
        for b in &blocks {
            let z = c.compress(b).unwrap();
            assert!(
                z.ends_with(&[0x00, 0x00, 0xff, 0xff]),
                "sync flushed: {z:02x?}"
            );
            sizes.push(z.len());
            assert_eq!(&d.decompress(&z, 1 << 16).unwrap(), b);
        }
        // The repeated block is cheaper the second time: the stream kept it.
        assert!(sizes[2] < sizes[1], "{sizes:?}");
    }

    #[test]
    fn oversized_and_corrupt_blocks_are_refused() {
        let mut c = HeaderCompressor::new().unwrap();
        let big = "y".repeat(10_000);
        let z = c.compress(&block(&[("big", big.as_str())])).unwrap();
        let e = HeaderDecompressor::new().decompress(&z, 1000).unwrap_err();
        assert!(matches!(e, SpdyError::HeaderBlockTooLarge(1000)), "{e}");
        let e = HeaderDecompressor::new()
            .decompress(&[0x78, 0x9c, 0xff, 0xff, 0xff], 1000)
            .unwrap_err();
        assert!(matches!(e, SpdyError::Compression(_)), "{e}");
    }
}

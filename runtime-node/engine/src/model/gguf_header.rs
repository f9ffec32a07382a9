//! The GGUF header (magic, metadata, tensor table) read with every count, length and offset
//! checked against the bytes the file actually has, so a truncated file or a header that lies
//! is an error naming the byte and the problem: never a panic, never an allocation larger
//! than the file. The result is candle's `Content`, whose tensor reader then serves weights,
//! plus the tensors stored in a type candle does not hold that the reader rewrites
//! ([`Rewrite`]): `Content` lists them as the type they are read as.
//!
//! Format: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>.

use std::collections::HashMap;
use std::io::Read;

use candle_core::quantized::GgmlDType;
use candle_core::quantized::gguf_file::{Content, TensorInfo, Value, VersionedMagic};

use super::gguf_rewrite::Rewrite;

/// Most dimensions a tensor may have (`GGML_MAX_DIMS`).
const MAX_TENSOR_DIMS: u32 = 4;
/// Deepest nesting of arrays inside metadata values.
const MAX_VALUE_DEPTH: usize = 8;
/// Most elements of one metadata array; real vocabularies are about 10^5.
const MAX_ARRAY_ELEMENTS: u64 = 1 << 24;
/// Alignment of the tensor data when `general.alignment` is absent.
const DEFAULT_ALIGNMENT: u64 = 32;

/// Why a GGUF header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// The file does not start with the GGUF magic.
    #[error("not a GGUF file (its first bytes are {0:?}, expected \"GGUF\")")]
    NotGguf([u8; 4]),
    /// Reading failed for a reason other than the end of the file.
    #[error("reading the header")]
    Io(#[source] std::io::Error),
    /// A tensor is stored in a ggml type that exists but that this engine does not load.
    #[error("tensor `{tensor}` is stored as {type_name} (ggml type {code}), which this engine does not load")]
    UnsupportedType {
        /// The tensor's name.
        tensor: String,
        /// The ggml type code.
        code: u32,
        /// The type's name in ggml.
        type_name: &'static str,
    },
    /// The bytes at `offset` do not make a valid header.
    #[error("at byte {offset}: {problem}")]
    Malformed {
        /// Where in the file the problem was found.
        offset: u64,
        /// What is wrong.
        problem: String,
    },
}

/// A parsed header: candle's view of the file, and the tensors to rewrite when read (by name).
#[derive(Debug)]
pub struct GgufHeader {
    /// Metadata and tensor table; rewritten tensors appear as their target type.
    pub content: Content,
    /// Tensors whose stored type candle does not hold.
    pub rewritten: HashMap<String, Rewrite>,
}

/// Reads the header of a GGUF file of `file_len` bytes from `reader`, positioned at its start.
pub fn read_header(reader: &mut impl Read, file_len: u64) -> Result<GgufHeader, HeaderError> {
    let mut bytes = Bounded {
        reader,
        offset: 0,
        len: file_len,
    };
    let mut magic = [0u8; 4];
    if file_len < 4 {
        let n = file_len as usize;
        bytes
            .reader
            .read_exact(&mut magic[..n])
            .map_err(HeaderError::Io)?;
        return Err(HeaderError::NotGguf(magic));
    }
    bytes.fill(&mut magic, "the magic")?;
    if &magic != b"GGUF" {
        return Err(HeaderError::NotGguf(magic));
    }
    let version = bytes.u32("the version")?;
    let magic = match version {
        1 => VersionedMagic::GgufV1,
        2 => VersionedMagic::GgufV2,
        3 => VersionedMagic::GgufV3,
        v => return Err(bytes.malformed(format!("unsupported GGUF version {v} (1 to 3 are read)"))),
    };
    let wide = !matches!(magic, VersionedMagic::GgufV1);
    let mut header = Header { bytes, wide };

    let tensor_count = header.length("the tensor count")?;
    let kv_count = header.length("the metadata count")?;
    // Each metadata entry takes at least a key length, a type and one byte; each tensor entry
    // a name length, a dimension count, a type and an offset.
    let prefix = header.length_size();
    let needed = kv_count
        .saturating_mul(prefix + 4 + 1)
        .saturating_add(tensor_count.saturating_mul(prefix + 4 + 4 + 8));
    header.bytes.ensure(
        needed,
        &format!("{tensor_count} tensors and {kv_count} metadata entries"),
    )?;

    let mut metadata = HashMap::new();
    for _ in 0..kv_count {
        let key_at = header.bytes.offset;
        let key = header.string("a metadata key")?;
        let value_type = header.bytes.u32("a metadata type")?;
        let value = header.value(value_type, 0)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(HeaderError::Malformed {
                offset: key_at,
                problem: format!("metadata key `{key}` appears twice"),
            });
        }
    }

    let mut tensors = Vec::new();
    for _ in 0..tensor_count {
        let name_at = header.bytes.offset;
        let name = header.string("a tensor name")?;
        let n_dims = header.bytes.u32("a tensor's dimension count")?;
        if n_dims > MAX_TENSOR_DIMS {
            return Err(header.bytes.malformed(format!(
                "tensor `{name}` has {n_dims} dimensions, at most {MAX_TENSOR_DIMS} are allowed"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let dim = header.length("a tensor dimension")?;
            let dim = usize::try_from(dim).map_err(|_| {
                header
                    .bytes
                    .malformed(format!("tensor `{name}` dimension {dim} is too large"))
            })?;
            dims.push(dim);
        }
        // GGUF lists the fastest-moving dimension first; candle's shapes list it last.
        dims.reverse();
        let code = header.bytes.u32("a tensor type")?;
        let stored = match (
            ggml_dtype(code),
            Rewrite::for_code(code),
            unloaded_type_name(code),
        ) {
            (Some(dtype), _, _) => Ok(dtype),
            (None, Some(rewrite), _) => Err(rewrite),
            (None, None, Some(type_name)) => {
                return Err(HeaderError::UnsupportedType {
                    tensor: name,
                    code,
                    type_name,
                });
            }
            (None, None, None) => {
                return Err(header
                    .bytes
                    .malformed(format!("tensor `{name}` has unknown ggml type {code}")));
            }
        };
        let offset = header.bytes.u64("a tensor offset")?;
        tensors.push((name_at, name, dims, stored, offset));
    }

    let alignment = alignment(&metadata).map_err(|problem| HeaderError::Malformed { offset: 0, problem })?;
    let end_of_header = header.bytes.offset;
    // Past the end only matters if a tensor is there: each tensor's extent is checked below.
    let tensor_data_offset = end_of_header.checked_next_multiple_of(alignment).ok_or_else(|| {
        header
            .bytes
            .malformed(format!("alignment {alignment} overflows the file offset"))
    })?;

    let mut tensor_infos = HashMap::with_capacity(tensors.len());
    let mut rewritten = HashMap::new();
    for (name_at, name, dims, stored, offset) in tensors {
        let malformed = |problem: String| HeaderError::Malformed {
            offset: name_at,
            problem: format!("tensor `{name}` {problem}"),
        };
        let (dtype, block, label) = match stored {
            Ok(dtype) => (
                dtype,
                (dtype.block_size(), dtype.type_size()),
                format!("{dtype:?}"),
            ),
            Err(rewrite) => {
                rewritten.insert(name.clone(), rewrite);
                (rewrite.target(), rewrite.stored_block(), format!("{rewrite:?}"))
            }
        };
        let size = tensor_bytes(&dims, block, &label).map_err(malformed)?;
        if offset % alignment != 0 {
            return Err(malformed(format!(
                "starts at data offset {offset}, not a multiple of the alignment {alignment}"
            )));
        }
        let end = tensor_data_offset
            .checked_add(offset)
            .and_then(|start| start.checked_add(size));
        if end.is_none_or(|end| end > file_len) {
            return Err(malformed(format!(
                "needs {size} bytes at data offset {offset}, past the end of the {file_len}-byte file"
            )));
        }
        let info = TensorInfo {
            ggml_dtype: dtype,
            shape: dims.into(),
            offset,
        };
        if tensor_infos.insert(name.clone(), info).is_some() {
            return Err(HeaderError::Malformed {
                offset: name_at,
                problem: format!("tensor `{name}` appears twice"),
            });
        }
    }
    let content = Content {
        magic,
        metadata,
        tensor_infos,
        tensor_data_offset,
    };
    Ok(GgufHeader { content, rewritten })
}

/// Bytes a tensor of `dims` takes on disk in blocks of `(weights, bytes)` of the type called
/// `dtype`, or why the shape cannot be stored.
fn tensor_bytes(dims: &[usize], (block, block_bytes): (usize, usize), dtype: &str) -> Result<u64, String> {
    let elems = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("has shape {dims:?}, too many elements"))?;
    // No weight is empty, and candle reads an empty tensor through a misaligned pointer.
    if elems == 0 {
        return Err(format!("has shape {dims:?}, no elements"));
    }
    if elems % block != 0 {
        return Err(format!(
            "has {elems} elements, not a multiple of the {dtype} block size {block}"
        ));
    }
    (elems / block)
        .checked_mul(block_bytes)
        .map(|b| b as u64)
        .ok_or_else(|| format!("has shape {dims:?}, too large to store"))
}

/// `general.alignment`: a power of two when present.
fn alignment(metadata: &HashMap<String, Value>) -> Result<u64, String> {
    let Some(value) = metadata.get("general.alignment") else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let n = match value {
        Value::U8(v) => u64::from(*v),
        Value::U16(v) => u64::from(*v),
        Value::U32(v) => u64::from(*v),
        Value::U64(v) => *v,
        Value::I8(v) => u64::try_from(*v).unwrap_or(0),
        Value::I16(v) => u64::try_from(*v).unwrap_or(0),
        Value::I32(v) => u64::try_from(*v).unwrap_or(0),
        Value::I64(v) => u64::try_from(*v).unwrap_or(0),
        other => return Err(format!("`general.alignment` must be an integer, found {other:?}")),
    };
    if !n.is_power_of_two() {
        return Err(format!("`general.alignment` is {n}, not a power of two"));
    }
    Ok(n)
}

/// The ggml tensor types candle can hold, by their GGUF code.
fn ggml_dtype(code: u32) -> Option<GgmlDType> {
    Some(match code {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        9 => GgmlDType::Q8_1,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        15 => GgmlDType::Q8K,
        30 => GgmlDType::BF16,
        _ => return None,
    })
}

/// The name of a ggml type that GGUF files may hold but candle (so this engine) does not.
fn unloaded_type_name(code: u32) -> Option<&'static str> {
    Some(match code {
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        21 => "IQ3_S",
        22 => "IQ2_S",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return None,
    })
}

/// A reader that knows how many bytes the file has left, so no read asks for more.
struct Bounded<'a, R> {
    reader: &'a mut R,
    offset: u64,
    len: u64,
}

impl<R: Read> Bounded<'_, R> {
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.offset)
    }

    fn malformed(&self, problem: String) -> HeaderError {
        HeaderError::Malformed {
            offset: self.offset,
            problem,
        }
    }

    /// Fails unless `needed` more bytes are left for `what`.
    fn ensure(&self, needed: u64, what: &str) -> Result<(), HeaderError> {
        let remaining = self.remaining();
        if needed > remaining {
            return Err(self.malformed(format!(
                "{what} need at least {needed} bytes, the file has {remaining} left"
            )));
        }
        Ok(())
    }

    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<(), HeaderError> {
        self.ensure(buf.len() as u64, what)?;
        match self.reader.read_exact(buf) {
            Ok(()) => {}
            // The file shrank under us, or `len` overstated it.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(self.malformed(format!("the file ends inside {what}")));
            }
            Err(e) => return Err(HeaderError::Io(e)),
        }
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], HeaderError> {
        let mut buf = [0u8; N];
        self.fill(&mut buf, what)?;
        Ok(buf)
    }

    fn u32(&mut self, what: &str) -> Result<u32, HeaderError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, HeaderError> {
        self.array(what).map(u64::from_le_bytes)
    }
}

/// The header reader once the version (and so the width of lengths) is known.
struct Header<'a, R> {
    bytes: Bounded<'a, R>,
    /// Lengths and counts are u64 from version 2 on, u32 before.
    wide: bool,
}

impl<R: Read> Header<'_, R> {
    fn length_size(&self) -> u64 {
        if self.wide { 8 } else { 4 }
    }

    fn length(&mut self, what: &str) -> Result<u64, HeaderError> {
        if self.wide {
            self.bytes.u64(what)
        } else {
            self.bytes.u32(what).map(u64::from)
        }
    }

    fn string(&mut self, what: &str) -> Result<String, HeaderError> {
        let len = self.length(what)?;
        self.bytes.ensure(len, &format!("{what} of {len} bytes"))?;
        // `ensure` bounds `len` by the file, so this allocation is no larger than the file.
        let mut buf = vec![0u8; len as usize];
        self.bytes.fill(&mut buf, what)?;
        // Strings should not be NUL-terminated, but some writers do; GGUF strings are UTF-8,
        // but some files carry broken bytes in their vocabularies (as candle reads them).
        while buf.last() == Some(&0) {
            buf.pop();
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// The smallest number of bytes one value of type `code` takes.
    fn min_size(&self, code: u32) -> u64 {
        match code {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 => self.length_size(),
            9 => 4 + self.length_size(),
            _ => 8,
        }
    }

    fn value(&mut self, code: u32, depth: usize) -> Result<Value, HeaderError> {
        let b = &mut self.bytes;
        Ok(match code {
            0 => Value::U8(b.array::<1>("a u8")?[0]),
            1 => Value::I8(i8::from_le_bytes(b.array("an i8")?)),
            2 => Value::U16(u16::from_le_bytes(b.array("a u16")?)),
            3 => Value::I16(i16::from_le_bytes(b.array("an i16")?)),
            4 => Value::U32(u32::from_le_bytes(b.array("a u32")?)),
            5 => Value::I32(i32::from_le_bytes(b.array("an i32")?)),
            6 => Value::F32(f32::from_le_bytes(b.array("an f32")?)),
            7 => match b.array::<1>("a bool")?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                other => return Err(b.malformed(format!("bool value {other} is neither 0 nor 1"))),
            },
            8 => Value::String(self.string("a string value")?),
            9 => {
                if depth >= MAX_VALUE_DEPTH {
                    return Err(b.malformed(format!("arrays nested deeper than {MAX_VALUE_DEPTH}")));
                }
                let item_type = b.u32("an array's element type")?;
                if item_type > 12 {
                    return Err(b.malformed(format!("unknown metadata type {item_type}")));
                }
                let len = self.length("an array length")?;
                if len > MAX_ARRAY_ELEMENTS {
                    return Err(self.bytes.malformed(format!(
                        "array of {len} elements, at most {MAX_ARRAY_ELEMENTS} are allowed"
                    )));
                }
                let needed = len.saturating_mul(self.min_size(item_type));
                self.bytes
                    .ensure(needed, &format!("an array of {len} elements"))?;
                // Reserve no more than a page of items up front: nested arrays each claim the
                // same remaining bytes, so capacity grows only with items actually read.
                let mut items = Vec::with_capacity((len as usize).min(4096));
                for _ in 0..len {
                    items.push(self.value(item_type, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(b.u64("a u64")?),
            11 => Value::I64(i64::from_le_bytes(b.array("an i64")?)),
            12 => Value::F64(f64::from_le_bytes(b.array("an f64")?)),
            other => return Err(b.malformed(format!("unknown metadata type {other}"))),
        })
    }
}

/// GGUF bytes written by hand, for tests of headers and of types no writer we have produces.
#[cfg(test)]
pub(crate) mod test_bytes {
    /// A GGUF string: its length, then its bytes.
    pub(crate) fn string(s: &str) -> Vec<u8> {
        let mut out = (s.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(s.as_bytes());
        out
    }

    /// A v3 header with `tensors` entries and these metadata entries, already encoded.
    pub(crate) fn header(tensors: u64, kvs: &[(&str, u32, Vec<u8>)]) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&tensors.to_le_bytes());
        out.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
        for (key, kind, value) in kvs {
            out.extend(string(key));
            out.extend_from_slice(&kind.to_le_bytes());
            out.extend_from_slice(value);
        }
        out
    }

    /// One tensor entry: name, dims (GGUF order), ggml type code, data offset.
    pub(crate) fn tensor_entry(name: &str, dims: &[u64], code: u32, offset: u64) -> Vec<u8> {
        let mut out = string(name);
        out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&code.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        out
    }

    /// A whole file: one `rows × cols` tensor `name` of ggml type `code` holding `data`.
    pub(crate) fn one_tensor_gguf(name: &str, rows: usize, cols: usize, code: u32, data: &[u8]) -> Vec<u8> {
        let mut bytes = header(1, &[]);
        // GGUF lists the row length first.
        bytes.extend(tensor_entry(name, &[cols as u64, rows as u64], code, 0));
        bytes.resize(bytes.len().next_multiple_of(32), 0);
        bytes.extend_from_slice(data);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::test_bytes::{header, tensor_entry};
    use super::*;
    use candle_core::quantized::{QTensor, gguf_file};
    use candle_core::{Device, Tensor};

    fn read(bytes: &[u8]) -> Result<Content, HeaderError> {
        read_header(&mut &bytes[..], bytes.len() as u64).map(|h| h.content)
    }

    fn problem(bytes: &[u8]) -> String {
        match read(bytes) {
            Err(HeaderError::Malformed { problem, .. }) => problem,
            other => panic!("expected a malformed header, got {other:?}"),
        }
    }

    #[test]
    fn reads_what_candle_writes_as_candle_does() {
        let device = Device::Cpu;
        let a = Tensor::arange(0f32, 6., &device)
            .and_then(|t| t.reshape((2, 3)))
            .expect("tensor");
        let b = Tensor::ones(64, candle_core::DType::F32, &device).expect("tensor");
        let a = QTensor::quantize(&a, GgmlDType::F32).expect("quantize");
        let b = QTensor::quantize(&b, GgmlDType::Q8_0).expect("quantize");
        let name = Value::String("tiny".into());
        let tokens = Value::Array(vec![Value::String("a".into()), Value::String("b".into())]);
        let count = Value::U32(2);
        let mut file = std::io::Cursor::new(Vec::new());
        gguf_file::write(
            &mut file,
            &[("general.name", &name), ("tokens", &tokens), ("count", &count)],
            &[("a", &a), ("b", &b)],
        )
        .expect("write");
        let bytes = file.into_inner();

        let ours = read(&bytes).expect("reads");
        let theirs = Content::read(&mut std::io::Cursor::new(&bytes)).expect("candle reads");
        assert_eq!(ours.tensor_data_offset, theirs.tensor_data_offset);
        // `Value` has no `PartialEq`; its debug form shows type and contents.
        let sorted = |m: &HashMap<String, Value>| {
            let mut v: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            v.sort();
            v
        };
        assert_eq!(sorted(&ours.metadata), sorted(&theirs.metadata));
        for (name, info) in &theirs.tensor_infos {
            let mine = &ours.tensor_infos[name];
            assert_eq!(
                (mine.shape.dims(), mine.offset),
                (info.shape.dims(), info.offset),
                "{name}"
            );
            assert_eq!(mine.ggml_dtype, info.ggml_dtype, "{name}");
        }
        assert_eq!(ours.tensor_infos.len(), 2);
        assert_eq!(ours.tensor_infos["a"].shape.dims(), &[2, 3]);
    }

    #[test]
    fn truncated_files_name_the_byte() {
        assert!(matches!(read(b"GG"), Err(HeaderError::NotGguf(_))));
        assert!(matches!(read(b"GGML\x03\0\0\0"), Err(HeaderError::NotGguf(_))));
        match read(b"GGUF\x03\0\0\0\x01\0") {
            Err(HeaderError::Malformed { offset, problem }) => {
                assert_eq!(offset, 8);
                assert!(problem.contains("tensor count"), "{problem}");
            }
            other => panic!("{other:?}"),
        }
        assert!(problem(b"GGUF\x07\0\0\0").contains("version 7"));
    }

    #[test]
    fn counts_and_lengths_that_lie_are_refused_before_allocating() {
        let p = problem(&header(u64::MAX, &[]));
        assert!(p.contains("need at least"), "{p}");
        let mut lying_string = header(0, &[]);
        lying_string[16..24].copy_from_slice(&1u64.to_le_bytes());
        lying_string.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
        lying_string.extend_from_slice(&[0; 16]);
        assert!(problem(&lying_string).contains("metadata key of"));
        // An array of 2^40 u64s in a file of a few bytes.
        let mut array = 10u32.to_le_bytes().to_vec();
        array.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let p = problem(&header(0, &[("big", 9, array)]));
        assert!(p.contains("array of"), "{p}");
    }

    /// An IQ4_NL tensor is listed as the Q8_0 it is read as, sized by its own 18-byte blocks.
    #[test]
    fn iq4_nl_tensors_are_listed_as_their_rewrite() {
        let with_data = |data: usize| {
            let mut bytes = header(1, &[]);
            bytes.extend(tensor_entry("w", &[64, 1], 20, 0));
            let data_start = bytes.len().next_multiple_of(32);
            bytes.resize(data_start + data, 0);
            bytes
        };
        let bytes = with_data(36);
        let parsed = read_header(&mut &bytes[..], bytes.len() as u64).expect("two IQ4_NL blocks");
        assert_eq!(parsed.content.tensor_infos["w"].ggml_dtype, GgmlDType::Q8_0);
        assert_eq!(parsed.rewritten.get("w"), Some(&Rewrite::Iq4NlAsQ8_0));
        let short = problem(&with_data(35));
        assert!(short.contains("needs 36 bytes"), "{short}");
    }

    #[test]
    fn wrong_types_and_shapes_are_errors() {
        assert!(problem(&header(0, &[("k", 13, vec![0])])).contains("unknown metadata type 13"));
        assert!(problem(&header(0, &[("k", 7, vec![2])])).contains("bool value 2"));
        let dup = header(0, &[("k", 0, vec![1]), ("k", 0, vec![2])]);
        assert!(problem(&dup).contains("appears twice"));

        let with = |entry: Vec<u8>| {
            let mut bytes = header(1, &[]);
            bytes.extend(entry);
            bytes.resize(bytes.len() + 64, 0);
            problem(&bytes)
        };
        assert!(with(tensor_entry("t", &[4], 99, 0)).contains("unknown ggml type 99"));
        let mut iq4 = header(1, &[]);
        iq4.extend(tensor_entry("blk.0.attn_q.weight", &[256], 21, 0));
        iq4.resize(iq4.len() + 256, 0);
        let err = read(&iq4).expect_err("IQ3_S");
        assert!(
            matches!(
                err,
                HeaderError::UnsupportedType {
                    code: 21,
                    type_name: "IQ3_S",
                    ..
                }
            ),
            "{err}"
        );
        assert!(with(tensor_entry("t", &[1, 1, 1, 1, 1], 0, 0)).contains("5 dimensions"));
        let p = with(tensor_entry("t", &[1 << 32, 1 << 32, 1 << 32], 0, 0));
        assert!(p.contains("too many elements"), "{p}");
        assert!(with(tensor_entry("t", &[33], 8, 0)).contains("block size"));
        // Found by the fuzzer: candle's tensor reader hit undefined behaviour (a misaligned
        // empty slice) on a tensor with a zero dimension.
        assert!(with(tensor_entry("t", &[4, 0], 0, 0)).contains("no elements"));
        assert!(with(tensor_entry("t", &[1024], 0, 0)).contains("past the end"));
        assert!(with(tensor_entry("t", &[1], 0, 3)).contains("alignment"));
        assert!(with(tensor_entry("t", &[1], 0, u64::MAX - 31)).contains("past the end"));
    }

    #[test]
    fn alignment_must_be_a_power_of_two() {
        // candle's own reader divides by this value: zero panics there.
        for value in [0u32, 3, 48] {
            let bytes = header(0, &[("general.alignment", 4, value.to_le_bytes().to_vec())]);
            assert!(problem(&bytes).contains("not a power of two"), "{value}");
        }
        let bytes = header(0, &[("general.alignment", 4, 8u32.to_le_bytes().to_vec())]);
        assert_eq!(read(&bytes).expect("reads").tensor_data_offset, 64);
    }
}

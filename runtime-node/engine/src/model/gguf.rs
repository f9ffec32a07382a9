//! Reading GGUF files: the header and metadata through a bounds-checked parser
//! ([`super::gguf_header`]), tensors through candle, plus typed accessors whose errors name the
//! file and the key, so a bad model fails with a sentence, not a panic.
//! Causes hang off `source()`: print errors with their chain (`{:#}` in anyhow).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::gguf_header::{HeaderError, read_header};
use super::gguf_rewrite::Rewrite;
use hearth_kernels::blocks::WeightType;

use candle_core::Device;
use candle_core::quantized::QTensor;
use candle_core::quantized::ggml_file::qtensor_from_ggml;
use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};

/// Everything that can go wrong while loading a model.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be opened or read.
    #[error("cannot read model file {path}")]
    Io {
        /// The model file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with the GGUF magic.
    #[error("{path} is not a GGUF file (its first bytes are {magic:?}, expected \"GGUF\")")]
    NotGguf {
        /// The model file.
        path: PathBuf,
        /// The first four bytes found.
        magic: [u8; 4],
    },
    /// The GGUF header is truncated or inconsistent (lengths past the end, unknown types...).
    #[error("{path}: malformed GGUF header at byte {offset}: {problem}")]
    Header {
        /// The model file.
        path: PathBuf,
        /// Where in the file the problem was found.
        offset: u64,
        /// What is wrong.
        problem: String,
    },
    /// A tensor is stored in a ggml type this engine does not load (the IQ types, for one).
    #[error(
        "{path}: tensor `{tensor}` is stored as {type_name} (ggml type {code}), which this engine \
         does not load; supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K to Q6_K, IQ4_NL \
         and IQ4_XS \
         (llama-quantize --allow-requantize converts a file, e.g. to Q4_K_M)"
    )]
    UnsupportedType {
        /// The model file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The ggml type code.
        code: u32,
        /// The type's name in ggml.
        type_name: &'static str,
    },
    /// A tensor (or a whole safetensors file) could not be parsed.
    #[error("{path}: malformed {what}")]
    Malformed {
        /// The model file.
        path: PathBuf,
        /// Which part failed.
        what: String,
        /// candle's description.
        #[source]
        source: Box<candle_core::Error>,
    },
    /// A metadata key the model needs is absent.
    #[error("{path}: missing GGUF metadata key `{key}`")]
    MissingKey {
        /// The model file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// A metadata value has the wrong type or an impossible value.
    #[error("{path}: GGUF metadata key `{key}`: {message}")]
    BadValue {
        /// The model file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// `general.architecture` names a model family this engine does not implement.
    #[error("{path}: unsupported architecture `{arch}` (supported: llama, mistral, qwen2)")]
    UnknownArchitecture {
        /// The model file.
        path: PathBuf,
        /// The architecture found.
        arch: String,
    },
    /// A tensor the model needs is absent.
    #[error("{path}: missing tensor `{name}`")]
    MissingTensor {
        /// The model file.
        path: PathBuf,
        /// The tensor name.
        name: String,
    },
    /// A tensor's shape does not match the metadata.
    #[error("{path}: tensor `{name}` has shape {actual:?}, expected {expected:?}")]
    TensorShape {
        /// The model file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// The shape in the file.
        actual: Vec<usize>,
        /// The shape the metadata implies.
        expected: Vec<usize>,
    },
    /// The tokenizer metadata could not be turned into a tokenizer.
    #[error("{path}: tokenizer: {message}")]
    Tokenizer {
        /// The model file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The model cannot be split over the requested tensor-parallel ranks.
    #[error("{path}: {error}")]
    TensorParallel {
        /// The model file.
        path: PathBuf,
        /// Which dimension does not divide.
        error: crate::parallel::IndivisibleError,
    },
    /// A tensor-parallel rank could not be started or set up.
    #[error("{path}: tensor-parallel rank {rank}: {message}")]
    Rank {
        /// The model file.
        path: PathBuf,
        /// The rank.
        rank: usize,
        /// What failed.
        message: String,
    },
    /// A tensor operation failed while assembling the model.
    #[error("{path}: building the model")]
    Build {
        /// The model file.
        path: PathBuf,
        /// candle's description.
        #[source]
        source: Box<candle_core::Error>,
    },
}

/// Where tensor data is read from: the file, or bytes in memory (tests, fuzzing).
trait TensorReader: Read + Seek + Send {}
impl<R: Read + Seek + Send> TensorReader for R {}

/// An open GGUF file: its parsed header and a reader for tensor data.
pub struct GgufFile {
    path: PathBuf,
    content: Content,
    // Tensors whose stored blocks are rewritten into the type `content` lists them as.
    rewritten: HashMap<String, Rewrite>,
    reader: Box<dyn TensorReader>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("tensors", &self.content.tensor_infos.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens `path` and parses its header and metadata (tensor data is read on demand).
    pub fn open(path: &Path) -> Result<Self, LoadError> {
        let file = File::open(path).map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_reader(path, BufReader::new(file))
    }

    /// Parses the header of the GGUF bytes `reader` yields from its start; `path` names them
    /// in errors. Every length in the header is checked against the size `reader` reports.
    pub fn from_reader(
        path: &Path,
        mut reader: impl Read + Seek + Send + 'static,
    ) -> Result<Self, LoadError> {
        let io = |source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file_len = reader.seek(SeekFrom::End(0)).map_err(io)?;
        reader.seek(SeekFrom::Start(0)).map_err(io)?;
        let header = read_header(&mut reader, file_len).map_err(|e| match e {
            HeaderError::NotGguf(magic) => LoadError::NotGguf {
                path: path.to_path_buf(),
                magic,
            },
            HeaderError::Io(source) => io(source),
            HeaderError::UnsupportedType {
                tensor,
                code,
                type_name,
            } => LoadError::UnsupportedType {
                path: path.to_path_buf(),
                tensor,
                code,
                type_name,
            },
            HeaderError::Malformed { offset, problem } => LoadError::Header {
                path: path.to_path_buf(),
                offset,
                problem,
            },
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            content: header.content,
            rewritten: header.rewritten,
            reader: Box::new(reader),
        })
    }

    /// Names of the tensors in the file.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.content.tensor_infos.keys().map(String::as_str)
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw metadata value for `key`, if present.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn missing(&self, key: &str) -> LoadError {
        LoadError::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
        }
    }

    fn bad(&self, key: &str, message: impl Into<String>) -> LoadError {
        LoadError::BadValue {
            path: self.path.clone(),
            key: key.to_string(),
            message: message.into(),
        }
    }

    /// A required string value.
    pub fn string(&self, key: &str) -> Result<&str, LoadError> {
        let value = self.value(key).ok_or_else(|| self.missing(key))?;
        value
            .to_string()
            .map(String::as_str)
            .map_err(|_| self.bad(key, format!("expected a string, found {:?}", value.value_type())))
    }

    /// An optional string value (present but mistyped is still an error).
    pub fn opt_string(&self, key: &str) -> Result<Option<&str>, LoadError> {
        match self.value(key) {
            None => Ok(None),
            Some(_) => self.string(key).map(Some),
        }
    }

    /// A required non-negative integer of any GGUF integer type.
    pub fn usize(&self, key: &str) -> Result<usize, LoadError> {
        let value = self.value(key).ok_or_else(|| self.missing(key))?;
        value_to_u64(value)
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| self.bad(key, format!("expected a non-negative integer, found {value:?}")))
    }

    /// An optional non-negative integer.
    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>, LoadError> {
        match self.value(key) {
            None => Ok(None),
            Some(_) => self.usize(key).map(Some),
        }
    }

    /// An optional float of any GGUF float type.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, LoadError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::F32(v)) => Ok(Some(f64::from(*v))),
            Some(Value::F64(v)) => Ok(Some(*v)),
            Some(other) => Err(self.bad(key, format!("expected a float, found {other:?}"))),
        }
    }

    /// An optional boolean.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, LoadError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Bool(v)) => Ok(Some(*v)),
            Some(other) => Err(self.bad(key, format!("expected a bool, found {other:?}"))),
        }
    }

    /// A required array of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<String>, LoadError> {
        let value = self.value(key).ok_or_else(|| self.missing(key))?;
        let items = value.to_vec().map_err(|_| self.bad(key, "expected an array"))?;
        items
            .iter()
            .map(|v| {
                v.to_string()
                    .cloned()
                    .map_err(|_| self.bad(key, format!("expected strings, found {v:?}")))
            })
            .collect()
    }

    /// An optional array of integers.
    pub fn opt_ints(&self, key: &str) -> Result<Option<Vec<i64>>, LoadError> {
        let Some(value) = self.value(key) else {
            return Ok(None);
        };
        let items = value.to_vec().map_err(|_| self.bad(key, "expected an array"))?;
        items
            .iter()
            .map(|v| value_to_i64(v).ok_or_else(|| self.bad(key, format!("expected integers, found {v:?}"))))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Whether the file holds a tensor called `name`.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// For a tensor stored in a type candle does not hold ([`Rewrite`]), that type and its
    /// bytes as stored (what our CPU kernels take), checking its shape; `None` for the others.
    pub fn stored_blocks(
        &mut self,
        name: &str,
        expected: &[usize],
    ) -> Result<Option<(WeightType, Vec<u8>)>, LoadError> {
        let Some(&rewrite) = self.rewritten.get(name) else {
            return Ok(None);
        };
        let info = checked_info(&self.content, &self.path, name, Some(expected))?;
        let stored =
            read_stored(&mut self.reader, &self.content, info, rewrite).map_err(|source| LoadError::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok(Some((rewrite.native(), stored)))
    }

    /// Reads tensor `name` onto `device`, checking its shape when `expected` is given.
    pub fn tensor(
        &mut self,
        name: &str,
        expected: Option<&[usize]>,
        device: &Device,
    ) -> Result<QTensor, LoadError> {
        let info = checked_info(&self.content, &self.path, name, expected)?;
        let read = match self.rewritten.get(name) {
            Some(&rewrite) => read_rewritten(&mut self.reader, &self.content, info, rewrite, device),
            None => self.content.tensor(&mut self.reader, name, device),
        };
        read.map_err(|source| LoadError::Malformed {
            path: self.path.clone(),
            what: format!("tensor `{name}`"),
            source: Box::new(source),
        })
    }
}

/// Tensor `name`'s entry, checking its shape when `expected` is given.
fn checked_info<'a>(
    content: &'a Content,
    path: &Path,
    name: &str,
    expected: Option<&[usize]>,
) -> Result<&'a TensorInfo, LoadError> {
    let Some(info) = content.tensor_infos.get(name) else {
        return Err(LoadError::MissingTensor {
            path: path.to_path_buf(),
            name: name.to_string(),
        });
    };
    if let Some(expected) = expected
        && info.shape.dims() != expected
    {
        return Err(LoadError::TensorShape {
            path: path.to_path_buf(),
            name: name.to_string(),
            actual: info.shape.dims().to_vec(),
            expected: expected.to_vec(),
        });
    }
    Ok(info)
}

/// The stored bytes of a tensor in a type candle does not hold (the header checked that they
/// lie within the file).
fn read_stored(
    reader: &mut dyn TensorReader,
    content: &Content,
    info: &TensorInfo,
    rewrite: Rewrite,
) -> std::io::Result<Vec<u8>> {
    let (block, block_bytes) = rewrite.stored_block();
    let mut stored = vec![0u8; info.shape.elem_count() / block * block_bytes];
    reader.seek(SeekFrom::Start(content.tensor_data_offset + info.offset))?;
    reader.read_exact(&mut stored)?;
    Ok(stored)
}

/// Reads a tensor stored in a type candle does not hold and rewrites its blocks into the type
/// `info` lists.
fn read_rewritten(
    reader: &mut dyn TensorReader,
    content: &Content,
    info: &TensorInfo,
    rewrite: Rewrite,
    device: &Device,
) -> candle_core::Result<QTensor> {
    let stored = read_stored(reader, content, info, rewrite)?;
    let blocks = rewrite
        .apply(&stored)
        .ok_or_else(|| candle_core::Error::Msg(format!("{rewrite:?}: not whole blocks")))?;
    qtensor_from_ggml(info.ggml_dtype, &blocks, info.shape.dims().to_vec(), device)
}

fn value_to_u64(value: &Value) -> Option<u64> {
    match value {
        Value::U64(v) => Some(*v),
        other => value_to_i64(other).and_then(|v| u64::try_from(v).ok()),
    }
}

fn value_to_i64(value: &Value) -> Option<i64> {
    match value {
        Value::U8(v) => Some(i64::from(*v)),
        Value::I8(v) => Some(i64::from(*v)),
        Value::U16(v) => Some(i64::from(*v)),
        Value::I16(v) => Some(i64::from(*v)),
        Value::U32(v) => Some(i64::from(*v)),
        Value::I32(v) => Some(i64::from(*v)),
        Value::U64(v) => i64::try_from(*v).ok(),
        Value::I64(v) => Some(*v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let path = std::env::temp_dir().join(format!("hearth-gguf-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).expect("write temp file");
        path
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = GgufFile::open(Path::new("/nonexistent/model.gguf")).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/model.gguf"), "{err}");
    }

    #[test]
    fn wrong_magic_is_not_gguf() {
        let path = temp_file("magic", b"PK\x03\x04 definitely a zip");
        let err = GgufFile::open(&path).expect_err("not gguf");
        assert!(matches!(err, LoadError::NotGguf { .. }), "{err}");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn truncated_header_is_malformed_not_a_panic() {
        // Magic, version 3, then a tensor count cut short.
        let path = temp_file("trunc", b"GGUF\x03\x00\x00\x00\x01\x00");
        let err = GgufFile::open(&path).expect_err("truncated");
        assert!(matches!(err, LoadError::Header { .. }), "{err}");
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
        let _ = std::fs::remove_file(path);
    }

    /// A 2 × 32 IQ4_NL tensor written by hand reads back as Q8_0 holding GGUF's IQ4_NL values.
    #[test]
    fn iq4_nl_tensors_read_as_q8_0_with_the_same_values() {
        let scales = [0.5f32, -0.25];
        let mut blocks = Vec::new();
        for (row, scale) in scales.iter().enumerate() {
            blocks.extend_from_slice(&half::f16::from_f32(*scale).to_le_bytes());
            // Byte i: index (i + row) mod 16 low, 15 − i high, so every level appears.
            blocks.extend((0..16u8).map(|i| ((i + row as u8) % 16) | ((15 - i) << 4)));
        }
        let path = temp_file(
            "iq4nl",
            &super::super::gguf_header::test_bytes::one_tensor_gguf("w", 2, 32, 20, &blocks),
        );
        let mut file = GgufFile::open(&path).expect("IQ4_NL header");
        let tensor = file.tensor("w", Some(&[2, 32]), &Device::Cpu).expect("tensor");
        assert_eq!(tensor.dtype(), candle_core::quantized::GgmlDType::Q8_0);
        let values = tensor
            .dequantize(&Device::Cpu)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .expect("values");
        // kvalues_iq4nl from GGUF's definition.
        let levels = [
            -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
        ];
        for (row, scale) in scales.iter().enumerate() {
            for i in 0..16 {
                let low = levels[(i + row) % 16] as f32 * scale;
                let high = levels[15 - i] as f32 * scale;
                assert_eq!(values[32 * row + i], low, "row {row} weight {i}");
                assert_eq!(values[32 * row + 16 + i], high, "row {row} weight {}", 16 + i);
            }
        }
        let _ = std::fs::remove_file(path);
    }
}

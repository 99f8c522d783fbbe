//! Request bodies in Kubernetes' protobuf encoding
//! (`application/vnd.kubernetes.protobuf`, what kubectl sends for typed
//! creates such as `kubectl create deployment`), decoded into the Kubernetes
//! JSON the rest of the REST API reads, so that they are handled exactly
//! like JSON bodies.
//!
//! A body is the magic `k8s\0` followed by a `runtime.Unknown` envelope: the
//! object's apiVersion and kind, and its message's bytes. The message is read
//! with a small protobuf wire reader (varints, 32- and 64-bit values,
//! length-delimited fields; unknown fields skipped) against the schema
//! generated into `objects::api_schema`, which gives every field's JSON name and
//! how Kubernetes writes it in JSON: Time as RFC 3339, IntOrString as a
//! number or a string, bytes in base64, RawExtension as the JSON it holds.
//!
//! Every field present on the wire is written, zero values included: Go's
//! clients write every field that is not a pointer (an empty `namespace`, a
//! `generation` of 0), and of a pointer field such as `spec.replicas` a
//! present 0 means 0. Lengths are checked against the bytes left, nesting is
//! capped and nothing is allocated on the word of an unchecked length, so a
//! malformed or hostile body is an error that says what and where (the
//! field's JSON path and the byte offset in the body), never a panic.

use base64::Engine;
use serde_json::{Map, Value};

use skiff_objects::api_schema::{FieldKind, FieldSchema, MessageSchema, KINDS, MESSAGES};

/// The media type of Kubernetes' protobuf encoding.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// What every body in Kubernetes' protobuf encoding starts with.
const MAGIC: &[u8; 4] = b"k8s\0";

/// How deeply messages may nest. The served schema nests at most 14 deep
/// (see `objects::api_schema`); the cap keeps a hostile body off the stack's
/// limit.
const MAX_DEPTH: usize = 64;

/// The largest protobuf field number.
const MAX_FIELD_NUMBER: u64 = (1 << 29) - 1;

/// Go's zero `time.Time`, 0001-01-01T00:00:00Z, in Unix seconds: Kubernetes
/// writes it as JSON `null`.
const GO_ZERO_TIME: i64 = -62_135_596_800;

const NANOS_PER_SECOND: i64 = 1_000_000_000;

// Protobuf wire types (3 and 4, groups, are not used by Kubernetes).
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

// The messages decoded by hand, as errors name them.
const UNKNOWN: &str = "k8s.io.apimachinery.pkg.runtime.Unknown";
const TYPE_META: &str = "k8s.io.apimachinery.pkg.runtime.TypeMeta";
const MAP_ENTRY: &str = "a map entry";
const INT_OR_STRING: &str = "k8s.io.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "k8s.io.apimachinery.pkg.api.resource.Quantity";
const TIMESTAMP: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Time";
const DURATION: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Duration";
const RAW: &str = "k8s.io.apimachinery.pkg.runtime.RawExtension";
const EXTRA_VALUE: &str = "ExtraValue";

/// Why a protobuf body could not be decoded. Offsets count bytes from the
/// start of the body; paths are JSON paths in the decoded object.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error(
        "the body does not start with Kubernetes' protobuf magic \"k8s\\0\": it is not \
         application/vnd.kubernetes.protobuf"
    )]
    BadMagic,
    #[error("{path}: the body ends inside a {what} that starts at byte {offset}")]
    Truncated {
        path: String,
        what: &'static str,
        offset: usize,
    },
    #[error("{path}: the varint at byte {offset} is longer than 10 bytes")]
    VarintTooLong { path: String, offset: usize },
    #[error(
        "{path}: the length {length} at byte {offset} runs past the end of its message \
         ({remaining} bytes left)"
    )]
    LengthPastEnd {
        path: String,
        offset: usize,
        length: u64,
        remaining: usize,
    },
    #[error("{path}: field number {tag} at byte {offset} is not a valid protobuf field number")]
    InvalidFieldNumber {
        path: String,
        offset: usize,
        tag: u64,
    },
    #[error("{path}: wire type {wire_type} at byte {offset} is not one Kubernetes uses")]
    UnsupportedWireType {
        path: String,
        offset: usize,
        wire_type: u8,
    },
    #[error(
        "{path}: field {tag} of {message} at byte {offset} has wire type {found}, \
         not {expected}"
    )]
    WrongWireType {
        path: String,
        offset: usize,
        message: &'static str,
        tag: u64,
        expected: u8,
        found: u8,
    },
    #[error("{path}: messages nest more than {limit} deep at byte {offset}")]
    TooDeep {
        path: String,
        offset: usize,
        limit: usize,
    },
    #[error("the body's runtime.Unknown envelope names no apiVersion and kind")]
    NoTypeMeta,
    #[error(
        "skiff cannot decode apiVersion {api_version:?} kind {kind:?} from protobuf; send it \
         as application/json"
    )]
    UnknownKind { api_version: String, kind: String },
    #[error("the body's contentEncoding {0:?} is not supported; send it unencoded")]
    ContentEncoding(String),
    #[error("the body's contentType {0:?} is not application/vnd.kubernetes.protobuf")]
    ContentType(String),
    #[error("{path}: the raw bytes at byte {offset} are not JSON: {source}")]
    NotJson {
        path: String,
        offset: usize,
        source: serde_json::Error,
    },
    #[error(
        "{path}: the time {seconds} s after 1970 at byte {offset} is outside the years 0000 \
         to 9999"
    )]
    TimeOutOfRange {
        path: String,
        offset: usize,
        seconds: i64,
    },
    #[error("{path}: IntOrString type {value} at byte {offset} is neither 0 (int) nor 1 (string)")]
    IntOrStringType {
        path: String,
        offset: usize,
        value: i64,
    },
    #[error(
        "the generated protobuf schema refers to message {index}, which it does not have; \
         regenerate it with scripts/gen-protobuf-schema"
    )]
    SchemaIndex { index: u16 },
}

pub type Result<T> = std::result::Result<T, ProtobufError>;

/// Decodes a body in Kubernetes' protobuf encoding into the object as
/// Kubernetes JSON, `apiVersion` and `kind` included.
pub fn decode(body: &[u8]) -> Result<Value> {
    Decoder {
        max_depth: MAX_DEPTH,
    }
    .decode(body)
}

/// Where in the decoded object a value is, for error messages, and how
/// deeply messages nest there.
#[derive(Clone, Copy)]
struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    step: Step<'a>,
    depth: usize,
}

#[derive(Clone, Copy)]
enum Step<'a> {
    /// What the path is relative to ("" for the decoded object).
    Root(&'static str),
    Field(&'static str),
    /// An inline message's members: a message deeper, but not in JSON.
    Inline,
    Index(usize),
    Key(&'a str),
}

impl<'a> Path<'a> {
    fn root(label: &'static str) -> Path<'static> {
        Path {
            parent: None,
            step: Step::Root(label),
            depth: 0,
        }
    }

    /// One step further in; a field or map value is a message deeper.
    fn then(&'a self, step: Step<'a>) -> Path<'a> {
        let deeper = match step {
            Step::Field(_) | Step::Inline | Step::Key(_) => 1,
            Step::Root(_) | Step::Index(_) => 0,
        };
        Path {
            parent: Some(self),
            step,
            depth: self.depth + deeper,
        }
    }

    /// `spec.template.spec.containers[0].image`.
    fn render(&self) -> String {
        let mut steps = Vec::new();
        let mut at = Some(self);
        while let Some(path) = at {
            steps.push(path.step);
            at = path.parent;
        }
        let mut out = String::new();
        for step in steps.iter().rev() {
            match step {
                Step::Root(label) => out.push_str(label),
                Step::Inline => {}
                Step::Field(name) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(name);
                }
                Step::Index(index) => {
                    out.push('[');
                    out.push_str(&index.to_string());
                    out.push(']');
                }
                Step::Key(key) => {
                    out.push_str("[\"");
                    out.push_str(key);
                    out.push_str("\"]");
                }
            }
        }
        if out.is_empty() {
            "(the object)".to_owned()
        } else {
            out
        }
    }
}

/// A field's key: its number and wire type, where it starts, and the
/// message it belongs to.
#[derive(Clone, Copy)]
struct Key {
    tag: u64,
    wire_type: u8,
    offset: usize,
    message: &'static str,
}

impl Key {
    fn expect(self, wire_type: u8, path: &Path<'_>) -> Result<()> {
        if self.wire_type == wire_type {
            return Ok(());
        }
        Err(ProtobufError::WrongWireType {
            path: path.render(),
            offset: self.offset,
            message: self.message,
            tag: self.tag,
            expected: wire_type,
            found: self.wire_type,
        })
    }
}

/// A cursor over one message's bytes, which start at `base` in the body.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], base: usize) -> Reader<'a> {
        Reader {
            bytes,
            pos: 0,
            base,
        }
    }

    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn varint(&mut self, path: &Path<'_>) -> Result<u64> {
        let start = self.offset();
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&byte) = self.bytes.get(self.pos) else {
                return Err(ProtobufError::Truncated {
                    path: path.render(),
                    what: "varint",
                    offset: start,
                });
            };
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtobufError::VarintTooLong {
            path: path.render(),
            offset: start,
        })
    }

    /// The next `width` bytes: a 32- or 64-bit value, `what` for errors.
    fn fixed(&mut self, width: usize, what: &'static str, path: &Path<'_>) -> Result<&'a [u8]> {
        let start = self.offset();
        let all: &'a [u8] = self.bytes;
        let Some(bytes) = all.get(self.pos..self.pos + width) else {
            return Err(ProtobufError::Truncated {
                path: path.render(),
                what,
                offset: start,
            });
        };
        self.pos += width;
        Ok(bytes)
    }

    /// A length-delimited payload and where it starts in the body.
    fn len_delimited(&mut self, path: &Path<'_>) -> Result<(&'a [u8], usize)> {
        let start = self.offset();
        let length = self.varint(path)?;
        let all: &'a [u8] = self.bytes;
        let remaining = all.len().saturating_sub(self.pos);
        let pos = self.pos;
        let payload = usize::try_from(length)
            .ok()
            .filter(|&length| length <= remaining)
            .and_then(|length| all.get(pos..pos + length));
        let Some(payload) = payload else {
            return Err(ProtobufError::LengthPastEnd {
                path: path.render(),
                offset: start,
                length,
                remaining,
            });
        };
        let offset = self.offset();
        self.pos += payload.len();
        Ok((payload, offset))
    }

    /// The next field's key; `message` is the message being read.
    fn key(&mut self, path: &Path<'_>, message: &'static str) -> Result<Key> {
        let offset = self.offset();
        let key = self.varint(path)?;
        let tag = key >> 3;
        if tag == 0 || tag > MAX_FIELD_NUMBER {
            return Err(ProtobufError::InvalidFieldNumber {
                path: path.render(),
                offset,
                tag,
            });
        }
        Ok(Key {
            tag,
            wire_type: (key & 7) as u8,
            offset,
            message,
        })
    }

    /// The value of a varint field whose key was just read.
    fn varint_of(&mut self, key: Key, path: &Path<'_>) -> Result<u64> {
        key.expect(VARINT, path)?;
        self.varint(path)
    }

    /// The payload of a length-delimited field whose key was just read.
    fn payload_of(&mut self, key: Key, path: &Path<'_>) -> Result<(&'a [u8], usize)> {
        key.expect(LEN, path)?;
        self.len_delimited(path)
    }

    /// Steps over the value of a field whose key was just read.
    fn skip(&mut self, key: Key, path: &Path<'_>) -> Result<()> {
        match key.wire_type {
            VARINT => self.varint(path).map(drop),
            FIXED64 => self.fixed(8, "64-bit value", path).map(drop),
            LEN => self.len_delimited(path).map(drop),
            FIXED32 => self.fixed(4, "32-bit value", path).map(drop),
            wire_type => Err(ProtobufError::UnsupportedWireType {
                path: path.render(),
                offset: key.offset,
                wire_type,
            }),
        }
    }
}

/// The envelope of every body.
struct Unknown<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    raw_offset: usize,
    content_encoding: String,
    content_type: String,
}

fn lossy(bytes: &[u8]) -> String {
    // Go's decoder takes strings as they come, and its JSON encoder writes
    // invalid UTF-8 as U+FFFD.
    String::from_utf8_lossy(bytes).into_owned()
}

/// `runtime.Unknown` {1: typeMeta {1: apiVersion, 2: kind}, 2: raw,
/// 3: contentEncoding, 4: contentType}.
fn read_unknown(bytes: &[u8], base: usize) -> Result<Unknown<'_>> {
    let root = Path::root("runtime.Unknown");
    let mut unknown = Unknown {
        api_version: String::new(),
        kind: String::new(),
        raw: &[],
        raw_offset: base + bytes.len(),
        content_encoding: String::new(),
        content_type: String::new(),
    };
    let mut reader = Reader::new(bytes, base);
    while !reader.at_end() {
        let key = reader.key(&root, UNKNOWN)?;
        match key.tag {
            1 => {
                let path = root.then(Step::Field("typeMeta"));
                let (payload, offset) = reader.payload_of(key, &path)?;
                let mut type_meta = Reader::new(payload, offset);
                while !type_meta.at_end() {
                    let key = type_meta.key(&path, TYPE_META)?;
                    match key.tag {
                        1 => unknown.api_version = lossy(type_meta.payload_of(key, &path)?.0),
                        2 => unknown.kind = lossy(type_meta.payload_of(key, &path)?.0),
                        _ => type_meta.skip(key, &path)?,
                    }
                }
            }
            2 => {
                let path = root.then(Step::Field("raw"));
                (unknown.raw, unknown.raw_offset) = reader.payload_of(key, &path)?;
            }
            3 => {
                let path = root.then(Step::Field("contentEncoding"));
                unknown.content_encoding = lossy(reader.payload_of(key, &path)?.0);
            }
            4 => {
                let path = root.then(Step::Field("contentType"));
                unknown.content_type = lossy(reader.payload_of(key, &path)?.0);
            }
            _ => reader.skip(key, &root)?,
        }
    }
    Ok(unknown)
}

/// The options kinds Kubernetes registers in every group version
/// (`metav1.AddToGroupVersion`): client-go writes a DELETE's body as a
/// `DeleteOptions` of the resource's own group version (helm 4 sends
/// `apps/v1` `DeleteOptions` in protobuf), so they are found by kind alone.
fn options_schema(kind: &str) -> Option<&'static MessageSchema> {
    let name = match kind {
        "DeleteOptions" => "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions",
        _ => return None,
    };
    MESSAGES.iter().find(|message| message.name == name)
}

fn message_schema(index: u16) -> Result<&'static MessageSchema> {
    MESSAGES
        .get(usize::from(index))
        .ok_or(ProtobufError::SchemaIndex { index })
}

fn find_field(schema: &'static MessageSchema, tag: u64) -> Option<&'static FieldSchema> {
    let tag = u16::try_from(tag).ok()?;
    let fields = schema.fields;
    let index = fields.binary_search_by_key(&tag, |field| field.tag).ok()?;
    fields.get(index)
}

/// Appends to the array `name` of `object`.
fn push(object: &mut Map<String, Value>, name: &str, value: Value) {
    let empty = || Value::Array(Vec::new());
    match object.entry(name).or_insert_with(empty) {
        Value::Array(items) => items.push(value),
        other => *other = Value::Array(vec![value]),
    }
}

/// Adds the members of `entry` to the object `name` of `object`.
fn merge_into(object: &mut Map<String, Value>, name: &str, entry: Value) {
    let empty = || Value::Object(Map::new());
    let slot = object.entry(name).or_insert_with(empty);
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    if let (Value::Object(map), Value::Object(members)) = (slot, entry) {
        map.extend(members);
    }
}

/// Decodes messages against the schema, refusing to nest deeper than
/// `max_depth`.
struct Decoder {
    max_depth: usize,
}

impl Decoder {
    fn decode(&self, body: &[u8]) -> Result<Value> {
        let envelope = body.strip_prefix(MAGIC).ok_or(ProtobufError::BadMagic)?;
        let unknown = read_unknown(envelope, MAGIC.len())?;
        if unknown.api_version.is_empty() && unknown.kind.is_empty() {
            return Err(ProtobufError::NoTypeMeta);
        }
        if !unknown.content_encoding.is_empty() {
            return Err(ProtobufError::ContentEncoding(unknown.content_encoding));
        }
        if !unknown.content_type.is_empty() && unknown.content_type != CONTENT_TYPE {
            return Err(ProtobufError::ContentType(unknown.content_type));
        }
        let (group, version) = unknown
            .api_version
            .split_once('/')
            .unwrap_or(("", unknown.api_version.as_str()));
        let found = KINDS
            .iter()
            .find(|k| k.group == group && k.version == version && k.kind == unknown.kind)
            .map(|kind| message_schema(kind.message))
            .or_else(|| options_schema(&unknown.kind).map(Ok));
        let Some(schema) = found else {
            return Err(ProtobufError::UnknownKind {
                api_version: unknown.api_version,
                kind: unknown.kind,
            });
        };
        let schema = schema?;
        let mut object = self.message(schema, unknown.raw, unknown.raw_offset, &Path::root(""))?;
        object.insert("apiVersion".to_owned(), Value::String(unknown.api_version));
        object.insert("kind".to_owned(), Value::String(unknown.kind));
        Ok(Value::Object(object))
    }

    /// A message as a JSON object.
    fn message(
        &self,
        schema: &'static MessageSchema,
        bytes: &[u8],
        base: usize,
        path: &Path<'_>,
    ) -> Result<Map<String, Value>> {
        self.check_depth(path, base)?;
        let mut object = Map::new();
        let mut reader = Reader::new(bytes, base);
        while !reader.at_end() {
            let key = reader.key(path, schema.name)?;
            match find_field(schema, key.tag) {
                Some(field) => {
                    let step = match field.kind {
                        FieldKind::Inline(_) => Step::Inline,
                        _ => Step::Field(field.json),
                    };
                    self.field(field, key, &mut reader, &path.then(step), &mut object)?;
                }
                None => reader.skip(key, path)?,
            }
        }
        Ok(object)
    }

    fn check_depth(&self, path: &Path<'_>, offset: usize) -> Result<()> {
        if path.depth > self.max_depth {
            return Err(ProtobufError::TooDeep {
                path: path.render(),
                offset,
                limit: self.max_depth,
            });
        }
        Ok(())
    }

    /// One occurrence of `field` on the wire, added to `object`: a map entry
    /// to its map, an inline message's members to `object` itself, an
    /// element to its array; any other field is set (the last one wins).
    fn field(
        &self,
        field: &FieldSchema,
        key: Key,
        reader: &mut Reader<'_>,
        path: &Path<'_>,
        object: &mut Map<String, Value>,
    ) -> Result<()> {
        match field.kind {
            FieldKind::MapString
            | FieldKind::MapBytes
            | FieldKind::MapQuantity
            | FieldKind::MapTime
            | FieldKind::MapStringList => {
                let entry = self.value(field.kind, key, reader, path)?;
                merge_into(object, field.json, entry);
            }
            FieldKind::Inline(_) => {
                if let Value::Object(members) = self.value(field.kind, key, reader, path)? {
                    object.extend(members);
                }
            }
            FieldKind::Bool | FieldKind::Int32 | FieldKind::Int64
                if field.repeated && key.wire_type == LEN =>
            {
                // Packed: the elements' varints one after another.
                let (packed, offset) = reader.len_delimited(path)?;
                let mut elements = Reader::new(packed, offset);
                let element = Key {
                    wire_type: VARINT,
                    ..key
                };
                while !elements.at_end() {
                    let value = self.value(field.kind, element, &mut elements, path)?;
                    push(object, field.json, value);
                }
            }
            _ if field.repeated => {
                let index = object
                    .get(field.json)
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                let value = self.value(field.kind, key, reader, &path.then(Step::Index(index)))?;
                push(object, field.json, value);
            }
            _ => {
                let value = self.value(field.kind, key, reader, path)?;
                object.insert(field.json.to_owned(), value);
            }
        }
        Ok(())
    }

    /// The JSON of one value of `kind` whose key was just read; a map entry
    /// is an object of one member.
    fn value(
        &self,
        kind: FieldKind,
        key: Key,
        reader: &mut Reader<'_>,
        path: &Path<'_>,
    ) -> Result<Value> {
        Ok(match kind {
            FieldKind::Bool => Value::Bool(reader.varint_of(key, path)? != 0),
            // Go truncates a varint to the field's width, as protobuf says.
            FieldKind::Int32 => Value::from(reader.varint_of(key, path)? as i32),
            FieldKind::Int64 => Value::from(reader.varint_of(key, path)? as i64),
            FieldKind::String => Value::String(lossy(reader.payload_of(key, path)?.0)),
            FieldKind::Bytes => {
                let (bytes, _) = reader.payload_of(key, path)?;
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            FieldKind::Message(index) | FieldKind::Inline(index) => {
                let (bytes, offset) = reader.payload_of(key, path)?;
                Value::Object(self.message(message_schema(index)?, bytes, offset, path)?)
            }
            FieldKind::IntOrString => {
                let (bytes, offset) = reader.payload_of(key, path)?;
                int_or_string(bytes, offset, path)?
            }
            FieldKind::Quantity => {
                let (bytes, offset) = reader.payload_of(key, path)?;
                quantity(bytes, offset, path)?
            }
            FieldKind::Time => {
                let (bytes, offset) = reader.payload_of(key, path)?;
                timestamp(bytes, offset, path, Precision::Seconds)?
            }
            FieldKind::MicroTime => {
                let (bytes, offset) = reader.payload_of(key, path)?;
                timestamp(bytes, offset, path, Precision::Micros)?
            }
            FieldKind::Duration => {
                let (bytes, offset) = reader.payload_of(key, path)?;
                duration(bytes, offset, path)?
            }
            FieldKind::RawJson => {
                let (bytes, offset) = reader.payload_of(key, path)?;
                raw_json(bytes, offset, path)?
            }
            FieldKind::MapString => {
                self.map_entry(MapValue::Of(FieldKind::String), key, reader, path)?
            }
            FieldKind::MapBytes => {
                self.map_entry(MapValue::Of(FieldKind::Bytes), key, reader, path)?
            }
            FieldKind::MapQuantity => {
                self.map_entry(MapValue::Of(FieldKind::Quantity), key, reader, path)?
            }
            FieldKind::MapTime => {
                self.map_entry(MapValue::Of(FieldKind::Time), key, reader, path)?
            }
            FieldKind::MapStringList => self.map_entry(MapValue::StringList, key, reader, path)?,
        })
    }

    /// One map value whose key was just read.
    fn map_value(
        &self,
        value_kind: MapValue,
        key: Key,
        reader: &mut Reader<'_>,
        path: &Path<'_>,
    ) -> Result<Value> {
        match value_kind {
            MapValue::Of(kind) => self.value(kind, key, reader, path),
            MapValue::StringList => {
                let (bytes, offset) = reader.payload_of(key, path)?;
                string_list(bytes, offset, path)
            }
        }
    }

    /// A `map<string, V>` entry {1: key, 2: value} as `{key: value}`.
    fn map_entry(
        &self,
        value_kind: MapValue,
        key: Key,
        reader: &mut Reader<'_>,
        path: &Path<'_>,
    ) -> Result<Value> {
        let (bytes, base) = reader.payload_of(key, path)?;
        self.check_depth(path, base)?;
        let mut name = String::new();
        let mut value = None;
        let mut entry = Reader::new(bytes, base);
        while !entry.at_end() {
            let key = entry.key(path, MAP_ENTRY)?;
            match key.tag {
                1 => name = lossy(entry.payload_of(key, path)?.0),
                2 => {
                    let here = path.then(Step::Key(&name));
                    value = Some(self.map_value(value_kind, key, &mut entry, &here)?);
                }
                _ => entry.skip(key, path)?,
            }
        }
        let value = match value {
            Some(value) => value,
            None => {
                // An entry without a value holds the value's default: read
                // an empty one (map values are all length-delimited).
                let empty = Key {
                    tag: 2,
                    wire_type: LEN,
                    offset: base + bytes.len(),
                    message: MAP_ENTRY,
                };
                let here = path.then(Step::Key(&name));
                let mut zero_length = Reader::new(&[0], empty.offset);
                self.map_value(value_kind, empty, &mut zero_length, &here)?
            }
        };
        let mut object = Map::new();
        object.insert(name, value);
        Ok(Value::Object(object))
    }
}

/// What a map's values are: a field kind, or Go's `ExtraValue` (`[]string`
/// in JSON, a message of one repeated string on the wire), which no field
/// holds on its own.
#[derive(Clone, Copy)]
enum MapValue {
    Of(FieldKind),
    StringList,
}

/// `ExtraValue` {1: repeated string}: a JSON array of the strings.
fn string_list(bytes: &[u8], base: usize, path: &Path<'_>) -> Result<Value> {
    let mut items = Vec::new();
    let mut reader = Reader::new(bytes, base);
    while !reader.at_end() {
        let key = reader.key(path, EXTRA_VALUE)?;
        match key.tag {
            1 => items.push(Value::String(lossy(reader.payload_of(key, path)?.0))),
            _ => reader.skip(key, path)?,
        }
    }
    Ok(Value::Array(items))
}

/// `intstr.IntOrString` {1: type, 2: intVal, 3: strVal}: type 0 is the
/// number, type 1 the string.
fn int_or_string(bytes: &[u8], base: usize, path: &Path<'_>) -> Result<Value> {
    let (mut kind, mut int_val, mut str_val) = (0i64, 0i32, String::new());
    let mut reader = Reader::new(bytes, base);
    while !reader.at_end() {
        let key = reader.key(path, INT_OR_STRING)?;
        match key.tag {
            1 => kind = reader.varint_of(key, path)? as i64,
            2 => int_val = reader.varint_of(key, path)? as i32,
            3 => str_val = lossy(reader.payload_of(key, path)?.0),
            _ => reader.skip(key, path)?,
        }
    }
    match kind {
        0 => Ok(Value::from(int_val)),
        1 => Ok(Value::String(str_val)),
        value => Err(ProtobufError::IntOrStringType {
            path: path.render(),
            offset: base,
            value,
        }),
    }
}

/// `resource.Quantity` {1: string}: the string, "0" when absent (Go's zero
/// Quantity).
fn quantity(bytes: &[u8], base: usize, path: &Path<'_>) -> Result<Value> {
    let mut value = "0".to_owned();
    let mut reader = Reader::new(bytes, base);
    while !reader.at_end() {
        let key = reader.key(path, QUANTITY)?;
        match key.tag {
            1 => value = lossy(reader.payload_of(key, path)?.0),
            _ => reader.skip(key, path)?,
        }
    }
    Ok(Value::String(value))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Precision {
    /// `meta.v1.Time`: Kubernetes keeps whole seconds.
    Seconds,
    /// `meta.v1.MicroTime`.
    Micros,
}

/// `meta.v1.Time` or `MicroTime` {1: seconds, 2: nanos} as Kubernetes writes
/// it: RFC 3339 in UTC ("2026-11-30T12:00:00Z", or with 6 fraction digits),
/// and the zero time (what an empty message holds) as null.
fn timestamp(bytes: &[u8], base: usize, path: &Path<'_>, precision: Precision) -> Result<Value> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    let (mut seconds, mut nanos) = (0i64, 0i64);
    let mut reader = Reader::new(bytes, base);
    while !reader.at_end() {
        let key = reader.key(path, TIMESTAMP)?;
        match key.tag {
            1 => seconds = reader.varint_of(key, path)? as i64,
            2 => nanos = i64::from(reader.varint_of(key, path)? as i32),
            _ => reader.skip(key, path)?,
        }
    }
    if precision == Precision::Seconds {
        nanos = 0;
    }
    let out_of_range = || ProtobufError::TimeOutOfRange {
        path: path.render(),
        offset: base,
        seconds,
    };
    // Go takes nanoseconds outside 0..1e9 as whole seconds more or less.
    let whole = seconds
        .checked_add(nanos.div_euclid(NANOS_PER_SECOND))
        .ok_or_else(out_of_range)?;
    let nanos = nanos.rem_euclid(NANOS_PER_SECOND);
    if whole == GO_ZERO_TIME && nanos == 0 {
        return Ok(Value::Null);
    }
    let utc = time::OffsetDateTime::from_unix_timestamp(whole).map_err(|_| out_of_range())?;
    if !(0..=9999).contains(&utc.year()) {
        return Err(out_of_range());
    }
    let date = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second()
    );
    Ok(Value::String(match precision {
        Precision::Seconds => format!("{date}Z"),
        Precision::Micros => format!("{date}.{:06}Z", nanos / 1000),
    }))
}

/// `meta.v1.Duration` {1: nanoseconds} as Go writes a `time.Duration`.
fn duration(bytes: &[u8], base: usize, path: &Path<'_>) -> Result<Value> {
    let mut nanos = 0i64;
    let mut reader = Reader::new(bytes, base);
    while !reader.at_end() {
        let key = reader.key(path, DURATION)?;
        match key.tag {
            1 => nanos = reader.varint_of(key, path)? as i64,
            _ => reader.skip(key, path)?,
        }
    }
    Ok(Value::String(go_duration(nanos)))
}

/// Go's `time.Duration.String`: "1h0m0s", "1m30s", "1.5s", "300ms", "0s".
fn go_duration(nanos: i64) -> String {
    let magnitude = nanos.unsigned_abs();
    let text = if magnitude < 1_000_000_000 {
        // Under a second: the largest unit that keeps a whole part.
        let (unit, digits) = match magnitude {
            0 => return "0s".to_owned(),
            1..=999 => ("ns", 0),
            1_000..=999_999 => ("µs", 3),
            _ => ("ms", 6),
        };
        let (whole, fraction) = split_fraction(magnitude, digits);
        format!("{whole}{fraction}{unit}")
    } else {
        let (seconds, fraction) = split_fraction(magnitude, 9);
        let mut text = format!("{}{fraction}s", seconds % 60);
        let minutes = seconds / 60;
        if minutes > 0 {
            text = format!("{}m{text}", minutes % 60);
            let hours = minutes / 60;
            if hours > 0 {
                text = format!("{hours}h{text}");
            }
        }
        text
    };
    if nanos < 0 {
        format!("-{text}")
    } else {
        text
    }
}

/// `value` as a whole part and ".fraction" of `digits` decimal digits,
/// trailing zeros (and a bare point) left out.
fn split_fraction(value: u64, digits: u32) -> (u64, String) {
    let scale = 10u64.pow(digits);
    let fraction = value % scale;
    if fraction == 0 {
        return (value / scale, String::new());
    }
    let width = digits as usize;
    let text = format!(".{fraction:0width$}");
    (value / scale, text.trim_end_matches('0').to_owned())
}

/// `runtime.RawExtension` or `meta.v1.FieldsV1` {1: raw}: the JSON the raw
/// bytes hold, null when there are none.
fn raw_json(bytes: &[u8], base: usize, path: &Path<'_>) -> Result<Value> {
    let mut value = Value::Null;
    let mut reader = Reader::new(bytes, base);
    while !reader.at_end() {
        let key = reader.key(path, RAW)?;
        match key.tag {
            1 => {
                let (raw, offset) = reader.payload_of(key, path)?;
                value = serde_json::from_slice(raw).map_err(|source| ProtobufError::NotJson {
                    path: path.render(),
                    offset,
                    source,
                })?;
            }
            _ => reader.skip(key, path)?,
        }
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A protobuf message written field by field, as Go's generated
    /// marshalers write Kubernetes objects (every non-pointer field, even
    /// when empty).
    #[derive(Default)]
    struct Msg(Vec<u8>);

    fn put_varint(out: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    impl Msg {
        fn new() -> Msg {
            Msg::default()
        }

        fn key(mut self, tag: u64, wire_type: u8) -> Msg {
            put_varint(&mut self.0, (tag << 3) | u64::from(wire_type));
            self
        }

        fn varint(self, tag: u64, value: u64) -> Msg {
            let mut msg = self.key(tag, VARINT);
            put_varint(&mut msg.0, value);
            msg
        }

        fn bytes(self, tag: u64, bytes: &[u8]) -> Msg {
            let mut msg = self.key(tag, LEN);
            put_varint(&mut msg.0, bytes.len() as u64);
            msg.0.extend_from_slice(bytes);
            msg
        }

        fn string(self, tag: u64, text: &str) -> Msg {
            self.bytes(tag, text.as_bytes())
        }

        fn message(self, tag: u64, inner: Msg) -> Msg {
            self.bytes(tag, &inner.0)
        }

        /// A `map<string, string>` entry.
        fn entry(self, tag: u64, key: &str, value: &str) -> Msg {
            self.message(tag, Msg::new().string(1, key).string(2, value))
        }

        fn raw(mut self, bytes: &[u8]) -> Msg {
            self.0.extend_from_slice(bytes);
            self
        }
    }

    /// A whole body: magic, then `runtime.Unknown` around `object`.
    fn body(api_version: &str, kind: &str, object: Msg) -> Vec<u8> {
        let type_meta = Msg::new().string(1, api_version).string(2, kind);
        let unknown = Msg::new().message(1, type_meta).message(2, object);
        let mut body = MAGIC.to_vec();
        body.extend_from_slice(&unknown.0);
        body
    }

    /// ObjectMeta as Go writes it for a new object: all its strings, a
    /// generation of 0 and an empty creationTimestamp (the zero time).
    fn new_object_meta(name: &str, labels: &[(&str, &str)]) -> Msg {
        let mut meta = Msg::new()
            .string(1, name)
            .string(2, "")
            .string(3, "")
            .string(4, "")
            .string(5, "")
            .string(6, "")
            .varint(7, 0)
            .message(8, Msg::new());
        for (key, value) in labels {
            meta = meta.entry(11, key, value);
        }
        meta
    }

    fn new_object_meta_json(name: &str) -> Value {
        json!({
            "name": name,
            "generateName": "",
            "namespace": "",
            "selfLink": "",
            "uid": "",
            "resourceVersion": "",
            "generation": 0,
            "creationTimestamp": null,
            "labels": {"app": "web"},
        })
    }

    /// `kubectl create deployment web --image=busybox --replicas=2`
    /// (kubectl 1.32): every non-pointer field of the Go structs is on the
    /// wire, as gogo-protobuf's generated marshalers write them.
    fn kubectl_deployment() -> Vec<u8> {
        let container = Msg::new()
            .string(1, "busybox")
            .string(2, "busybox")
            .string(5, "")
            .message(8, Msg::new())
            .string(13, "")
            .string(14, "")
            .varint(16, 0)
            .varint(17, 0)
            .varint(18, 0)
            .string(20, "");
        let pod_spec = Msg::new()
            .message(2, container)
            .string(3, "")
            .string(6, "")
            .string(8, "")
            .string(9, "")
            .string(10, "")
            .varint(11, 0)
            .varint(12, 0)
            .varint(13, 0)
            .string(16, "")
            .string(17, "")
            .string(19, "")
            .string(24, "");
        let template = Msg::new()
            .message(1, new_object_meta("", &[("app", "web")]))
            .message(2, pod_spec);
        let spec = Msg::new()
            .varint(1, 2)
            .message(2, Msg::new().entry(1, "app", "web"))
            .message(3, template)
            .message(4, Msg::new().string(1, ""))
            .varint(5, 0)
            .varint(7, 0);
        let status = Msg::new()
            .varint(1, 0)
            .varint(2, 0)
            .varint(3, 0)
            .varint(4, 0)
            .varint(5, 0)
            .varint(7, 0);
        let deployment = Msg::new()
            .message(1, new_object_meta("web", &[("app", "web")]))
            .message(2, spec)
            .message(3, status);
        body("apps/v1", "Deployment", deployment)
    }

    #[test]
    fn a_deployment_from_kubectl_create_becomes_its_kubernetes_json() {
        let value = decode(&kubectl_deployment()).unwrap();
        let expected = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": new_object_meta_json("web"),
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": new_object_meta_json(""),
                    "spec": {
                        "containers": [{
                            "name": "busybox",
                            "image": "busybox",
                            "workingDir": "",
                            "resources": {},
                            "terminationMessagePath": "",
                            "imagePullPolicy": "",
                            "stdin": false,
                            "stdinOnce": false,
                            "tty": false,
                            "terminationMessagePolicy": "",
                        }],
                        "restartPolicy": "",
                        "dnsPolicy": "",
                        "serviceAccountName": "",
                        "serviceAccount": "",
                        "nodeName": "",
                        "hostNetwork": false,
                        "hostPID": false,
                        "hostIPC": false,
                        "hostname": "",
                        "subdomain": "",
                        "schedulerName": "",
                        "priorityClassName": "",
                    },
                },
                "strategy": {"type": ""},
                "minReadySeconds": 0,
                "paused": false,
            },
            "status": {
                "observedGeneration": 0,
                "replicas": 0,
                "updatedReplicas": 0,
                "availableReplicas": 0,
                "unavailableReplicas": 0,
                "readyReplicas": 0,
            },
        });
        assert_eq!(value, expected);
    }

    #[test]
    fn fields_on_the_wire_are_kept_with_zero_values_and_absent_ones_left_out() {
        let spec = |replicas: Option<u64>| {
            let spec = Msg::new().message(4, Msg::new());
            let spec = match replicas {
                Some(n) => spec.varint(1, n),
                None => spec,
            };
            body("apps/v1", "Deployment", Msg::new().message(2, spec))
        };
        let value = decode(&spec(Some(0))).unwrap();
        assert_eq!(value["spec"], json!({"replicas": 0, "strategy": {}}));
        let value = decode(&spec(None)).unwrap();
        assert_eq!(value["spec"], json!({"strategy": {}}));
        assert!(value.get("metadata").is_none(), "{value}");
    }

    #[test]
    fn secret_data_is_base64_and_string_data_stays_text() {
        let password = Msg::new().string(1, "password").bytes(2, b"\0\xffhunter2");
        let user = Msg::new().string(1, "user").bytes(2, b"admin");
        let secret = Msg::new()
            .message(1, Msg::new().string(1, "creds"))
            .message(2, password)
            .message(2, user)
            .string(3, "Opaque")
            .entry(4, "note", "plain");
        let value = decode(&body("v1", "Secret", secret)).unwrap();
        assert_eq!(
            value,
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "creds"},
                "data": {"password": "AP9odW50ZXIy", "user": "YWRtaW4="},
                "type": "Opaque",
                "stringData": {"note": "plain"},
            })
        );
    }

    #[test]
    fn int_or_string_is_a_number_or_a_string_by_its_type() {
        let number = Msg::new().varint(1, 0).varint(2, 8080).string(3, "");
        let name = Msg::new().varint(1, 1).varint(2, 0).string(3, "http");
        let a = Msg::new().string(1, "a").varint(3, 80).message(4, number);
        let b = Msg::new().string(1, "b").varint(3, 81).message(4, name);
        let spec = Msg::new().message(1, a).message(1, b);
        let value = decode(&body("v1", "Service", Msg::new().message(2, spec))).unwrap();
        assert_eq!(
            value["spec"]["ports"],
            json!([
                {"name": "a", "port": 80, "targetPort": 8080},
                {"name": "b", "port": 81, "targetPort": "http"},
            ])
        );

        let bad = Msg::new().varint(1, 7);
        let spec = Msg::new().message(1, Msg::new().message(4, bad));
        let err = decode(&body("v1", "Service", Msg::new().message(2, spec))).unwrap_err();
        assert!(
            matches!(err, ProtobufError::IntOrStringType { value: 7, .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("spec.ports[0].targetPort"),
            "{err}"
        );
    }

    #[test]
    fn times_are_rfc3339_in_utc_and_the_zero_time_is_null() {
        // 2026-11-30T12:00:00Z; Time drops the nanoseconds.
        let created = Msg::new().varint(1, 1_796_040_000).varint(2, 123_456_789);
        let meta = Msg::new()
            .string(1, "n")
            .message(8, created)
            .message(9, Msg::new());
        let value = decode(&body("v1", "Namespace", Msg::new().message(1, meta))).unwrap();
        let meta = &value["metadata"];
        assert_eq!(meta["creationTimestamp"], "2026-11-30T12:00:00Z");
        assert_eq!(meta["deletionTimestamp"], Value::Null);
        assert!(meta.get("deletionTimestamp").is_some());

        // events.k8s.io Event.eventTime is a MicroTime.
        let event_time = Msg::new().varint(1, 1_796_040_000).varint(2, 123_456_789);
        let event = Msg::new().message(2, event_time);
        let value = decode(&body("events.k8s.io/v1", "Event", event)).unwrap();
        assert_eq!(value["eventTime"], "2026-11-30T12:00:00.123456Z");

        // Negative seconds count back from 1970; years past 9999 are refused.
        let early = Msg::new().varint(1, (-1i64) as u64);
        let meta = Msg::new().message(8, early);
        let value = decode(&body("v1", "Namespace", Msg::new().message(1, meta))).unwrap();
        let meta = &value["metadata"];
        assert_eq!(meta["creationTimestamp"], "1969-12-31T23:59:59Z");
        let late = Msg::new().varint(1, 253_402_300_800);
        let meta = Msg::new().message(8, late);
        let err = decode(&body("v1", "Namespace", Msg::new().message(1, meta))).unwrap_err();
        assert!(matches!(err, ProtobufError::TimeOutOfRange { .. }), "{err}");
        assert!(
            err.to_string().contains("metadata.creationTimestamp"),
            "{err}"
        );
    }

    #[test]
    fn durations_read_as_go_writes_them() {
        let decoder = Decoder {
            max_depth: MAX_DEPTH,
        };
        let read = |nanos: i64| {
            let bytes = Msg::new().message(1, Msg::new().varint(1, nanos as u64)).0;
            let mut reader = Reader::new(&bytes, 0);
            let key = reader.key(&Path::root(""), DURATION).unwrap();
            decoder
                .value(FieldKind::Duration, key, &mut reader, &Path::root(""))
                .unwrap()
        };
        assert_eq!(read(3_600_000_000_000), "1h0m0s");
        assert_eq!(read(30_000_000_000), "30s");
        assert_eq!(read(90_000_000_000), "1m30s");
        assert_eq!(read(1_500_000_000), "1.5s");
        assert_eq!(read(300_000_000), "300ms");
        assert_eq!(read(1_500), "1.5µs");
        assert_eq!(read(7), "7ns");
        assert_eq!(read(0), "0s");
        assert_eq!(read(-90_000_000_000), "-1m30s");
        assert_eq!(go_duration(i64::MIN), "-2562047h47m16.854775808s");
    }

    #[test]
    fn quantities_raw_extensions_and_packed_numbers_keep_their_json_shapes() {
        let half = Msg::new().string(1, "500m");
        let limits = Msg::new().string(1, "cpu").message(2, half);
        let resources = Msg::new().message(1, limits);
        let container = Msg::new().string(1, "c").message(8, resources);
        let pod = Msg::new().message(2, Msg::new().message(2, container));
        let value = decode(&body("v1", "Pod", pod)).unwrap();
        assert_eq!(
            value["spec"]["containers"][0]["resources"],
            json!({"limits": {"cpu": "500m"}})
        );

        let data = Msg::new().bytes(1, br#"{"spec": {"x": [1, 2]}}"#);
        let revision = Msg::new().message(2, data).varint(3, 4);
        let value = decode(&body("apps/v1", "ControllerRevision", revision)).unwrap();
        assert_eq!(value["data"], json!({"spec": {"x": [1, 2]}}));
        assert_eq!(value["revision"], 4);

        let not_json = Msg::new().message(2, Msg::new().bytes(1, b"\x0a\x01x"));
        let err = decode(&body("apps/v1", "ControllerRevision", not_json)).unwrap_err();
        assert!(matches!(err, ProtobufError::NotJson { .. }), "{err}");
        assert!(err.to_string().starts_with("data: "), "{err}");

        // PodSecurityContext.supplementalGroups (int64, repeated), packed and not.
        let mut packed = Vec::new();
        for group in [1000u64, 2000] {
            put_varint(&mut packed, group);
        }
        let security = Msg::new().bytes(4, &packed).varint(4, 3000);
        let pod = Msg::new().message(2, Msg::new().message(14, security));
        let value = decode(&body("v1", "Pod", pod)).unwrap();
        assert_eq!(
            value["spec"]["securityContext"]["supplementalGroups"],
            json!([1000, 2000, 3000])
        );
    }

    #[test]
    fn inline_members_join_the_enclosing_object() {
        // Volume {1: name, 2: VolumeSource {2: emptyDir {}}} is
        // {"name": ..., "emptyDir": {}} in JSON.
        let source = Msg::new().message(2, Msg::new());
        let volume = Msg::new().string(1, "scratch").message(2, source);
        let pod = Msg::new().message(2, Msg::new().message(1, volume));
        let value = decode(&body("v1", "Pod", pod)).unwrap();
        assert_eq!(
            value["spec"]["volumes"],
            json!([{"name": "scratch", "emptyDir": {}}])
        );
    }

    #[test]
    fn delete_options_of_any_group_version_are_read() {
        let options = Msg::new()
            .varint(1, 0)
            .string(4, "Foreground")
            .string(5, "All");
        let value = decode(&body("apps/v1", "DeleteOptions", options)).unwrap();
        assert_eq!(value["kind"], "DeleteOptions");
        assert_eq!(value["gracePeriodSeconds"], 0);
        assert_eq!(value["propagationPolicy"], "Foreground");
        assert_eq!(value["dryRun"], serde_json::json!(["All"]));
        let unknown = decode(&body("apps/v1", "ListOptions", Msg::new())).unwrap_err();
        assert!(unknown.to_string().contains("ListOptions"), "{unknown}");
    }

    #[test]
    fn unknown_fields_of_every_wire_type_are_skipped() {
        let spec = Msg::new()
            .varint(1, 3)
            .varint(99, 5)
            .string(98, "later field")
            .key(97, FIXED32)
            .raw(&[1, 2, 3, 4])
            .key(96, FIXED64)
            .raw(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let deployment = Msg::new().varint(50, 1).message(2, spec);
        let value = decode(&body("apps/v1", "Deployment", deployment)).unwrap();
        assert_eq!(
            value,
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 3}})
        );
    }

    #[test]
    fn malformed_bodies_are_errors_that_say_what_and_where() {
        let err = decode(b"{\"kind\": \"Pod\"}").unwrap_err();
        assert!(matches!(err, ProtobufError::BadMagic), "{err}");

        // The replicas varint has its continuation bit set and nothing after.
        let spec = Msg::new().key(1, VARINT).raw(&[0x80]);
        let err = decode(&body("apps/v1", "Deployment", Msg::new().message(2, spec))).unwrap_err();
        assert!(
            matches!(err, ProtobufError::Truncated { what: "varint", .. }),
            "{err}"
        );
        assert!(err.to_string().starts_with("spec.replicas: "), "{err}");

        let eleven = [0xff; 11];
        let spec = Msg::new().key(1, VARINT).raw(&eleven);
        let err = decode(&body("apps/v1", "Deployment", Msg::new().message(2, spec))).unwrap_err();
        assert!(matches!(err, ProtobufError::VarintTooLong { .. }), "{err}");

        // A name claiming 100 bytes where 3 are left.
        let meta = Msg::new().key(1, LEN).raw(&[100, b'w', b'e', b'b']);
        let pod = body("v1", "Pod", Msg::new().message(1, meta));
        let err = decode(&pod).unwrap_err();
        match &err {
            ProtobufError::LengthPastEnd {
                path,
                offset,
                length,
                remaining,
            } => {
                assert_eq!(path, "metadata.name");
                assert_eq!((*length, *remaining), (100, 3));
                assert_eq!(pod.get(*offset), Some(&100), "the offset is the length's");
            }
            other => panic!("not LengthPastEnd: {other}"),
        }

        // A length past the end of the envelope itself.
        let mut cut = kubectl_deployment();
        cut.truncate(cut.len() - 10);
        let err = decode(&cut).unwrap_err();
        assert!(matches!(err, ProtobufError::LengthPastEnd { .. }), "{err}");

        // replicas as a string: the wrong wire type.
        let spec = Msg::new().string(1, "2");
        let err = decode(&body("apps/v1", "Deployment", Msg::new().message(2, spec))).unwrap_err();
        match &err {
            ProtobufError::WrongWireType {
                message,
                tag,
                expected,
                found,
                ..
            } => {
                assert_eq!(*message, "k8s.io.api.apps.v1.DeploymentSpec");
                assert_eq!((*tag, *expected, *found), (1, VARINT, LEN));
            }
            other => panic!("not WrongWireType: {other}"),
        }

        let spec = Msg::new().key(0, VARINT).raw(&[1]);
        let err = decode(&body("apps/v1", "Deployment", Msg::new().message(2, spec))).unwrap_err();
        assert!(
            matches!(err, ProtobufError::InvalidFieldNumber { tag: 0, .. }),
            "{err}"
        );

        let spec = Msg::new().key(99, 3);
        let err = decode(&body("apps/v1", "Deployment", Msg::new().message(2, spec))).unwrap_err();
        assert!(
            matches!(err, ProtobufError::UnsupportedWireType { wire_type: 3, .. }),
            "{err}"
        );
    }

    /// `kubectl auth can-i create deployments -n shop` (kubectl 1.32): a
    /// SelfSubjectAccessReview, every string of its ResourceAttributes on
    /// the wire.
    #[test]
    fn an_access_review_from_kubectl_auth_can_i_becomes_its_kubernetes_json() {
        let attributes = Msg::new()
            .string(1, "shop")
            .string(2, "create")
            .string(3, "apps")
            .string(4, "")
            .string(5, "deployments")
            .string(6, "")
            .string(7, "");
        let review = Msg::new()
            .message(1, Msg::new().message(8, Msg::new()))
            .message(2, Msg::new().message(1, attributes))
            .message(3, Msg::new().varint(1, 0).string(2, "").string(3, ""));
        let value = decode(&body(
            "authorization.k8s.io/v1",
            "SelfSubjectAccessReview",
            review,
        ));
        assert_eq!(
            value.unwrap(),
            json!({
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "metadata": {"creationTimestamp": null},
                "spec": {"resourceAttributes": {
                    "namespace": "shop",
                    "verb": "create",
                    "group": "apps",
                    "version": "",
                    "resource": "deployments",
                    "subresource": "",
                    "name": "",
                }},
                "status": {"allowed": false, "reason": "", "evaluationError": ""},
            })
        );
        // `kubectl auth whoami`: an empty SelfSubjectReview.
        let value = decode(&body(
            "authentication.k8s.io/v1",
            "SelfSubjectReview",
            Msg::new(),
        ));
        assert_eq!(
            value.unwrap(),
            json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        );
    }

    #[test]
    fn a_users_extra_is_a_map_of_string_lists() {
        // SelfSubjectReview.status.userInfo.extra, Go's map[string]ExtraValue.
        let extra = |key: &str, items: &[&str]| {
            let list = items
                .iter()
                .fold(Msg::new(), |list, item| list.string(1, item));
            Msg::new().string(1, key).message(2, list)
        };
        let user = Msg::new()
            .string(1, "jane")
            .message(4, extra("scopes", &["a", "b"]))
            .message(4, extra("none", &[]))
            .message(4, Msg::new().string(1, "bare"));
        let review = Msg::new().message(2, Msg::new().message(1, user));
        let value = decode(&body(
            "authentication.k8s.io/v1",
            "SelfSubjectReview",
            review,
        ));
        assert_eq!(
            value.unwrap()["status"]["userInfo"],
            json!({
                "username": "jane",
                "extra": {"scopes": ["a", "b"], "none": [], "bare": []},
            })
        );
    }

    #[test]
    fn the_envelope_must_name_a_kind_skiff_has_a_schema_for() {
        let err = decode(&body("example.com/v1", "Frobnicator", Msg::new())).unwrap_err();
        match &err {
            ProtobufError::UnknownKind { api_version, kind } => {
                assert_eq!(api_version, "example.com/v1");
                assert_eq!(kind, "Frobnicator");
            }
            other => panic!("not UnknownKind: {other}"),
        }
        assert!(err.to_string().contains("Frobnicator"), "{err}");
        // The right kind in the wrong group is no better.
        let err = decode(&body("batch/v1", "Deployment", Msg::new())).unwrap_err();
        assert!(matches!(err, ProtobufError::UnknownKind { .. }), "{err}");

        let mut no_type = MAGIC.to_vec();
        no_type.extend_from_slice(&Msg::new().message(2, Msg::new()).0);
        assert!(matches!(decode(&no_type), Err(ProtobufError::NoTypeMeta)));

        let type_meta = Msg::new().string(1, "v1").string(2, "Namespace");
        let gzipped = Msg::new().message(1, type_meta).string(3, "gzip");
        let mut body = MAGIC.to_vec();
        body.extend_from_slice(&gzipped.0);
        match decode(&body) {
            Err(ProtobufError::ContentEncoding(encoding)) => assert_eq!(encoding, "gzip"),
            other => panic!("not ContentEncoding: {other:?}"),
        }

        // A core kind with no raw message is an empty object of that kind.
        let value = decode(&self::body("v1", "Namespace", Msg::new())).unwrap();
        assert_eq!(value, json!({"apiVersion": "v1", "kind": "Namespace"}));
    }

    /// Where decoding kubectl's Deployment stops with nesting limited to
    /// `max_depth`.
    fn too_deep(max_depth: usize) -> (String, usize) {
        let decoder = Decoder { max_depth };
        match decoder.decode(&kubectl_deployment()) {
            Err(ProtobufError::TooDeep { path, limit, .. }) => (path, limit),
            other => panic!("not TooDeep: {other:?}"),
        }
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_an_error() {
        // A map entry is a message one deeper.
        let (path, limit) = too_deep(2);
        assert_eq!((path.as_str(), limit), ("spec.selector.matchLabels", 2));
        let (path, _) = too_deep(4);
        assert_eq!(path, "spec.template.spec.containers[0].resources");
        let enough = Decoder { max_depth: 5 };
        assert!(enough.decode(&kubectl_deployment()).is_ok());
    }

    /// `depth` messages each holding the next as field `tag`, around
    /// `innermost`.
    fn nested(tag: u64, depth: usize, innermost: &[u8]) -> Vec<u8> {
        let mut lengths = Vec::with_capacity(depth);
        let mut length = innermost.len();
        for _ in 0..depth {
            lengths.push(length);
            let mut prefix = Vec::new();
            put_varint(&mut prefix, (tag << 3) | u64::from(LEN));
            put_varint(&mut prefix, length as u64);
            length += prefix.len();
        }
        let mut out = Vec::with_capacity(length);
        for length in lengths.iter().rev() {
            put_varint(&mut out, (tag << 3) | u64::from(LEN));
            put_varint(&mut out, *length as u64);
        }
        out.extend_from_slice(innermost);
        out
    }

    #[test]
    fn a_depth_bomb_goes_no_deeper_than_the_schema() {
        // 100,000 frames nested as field 2: Deployment.spec.selector
        // .matchExpressions[0].operator is a string, which ends the descent
        // (the schema is not recursive); the rest is that string's bytes.
        let bomb = nested(2, 100_000, b"x");
        let value = decode(&body("apps/v1", "Deployment", Msg::new().raw(&bomb))).unwrap();
        let operator = &value["spec"]["selector"]["matchExpressions"][0]["operator"];
        assert!(
            operator.as_str().is_some_and(|s| s.ends_with('x')),
            "{operator}"
        );

        // The same frames cut short: the outermost length runs past the end.
        let cut = &bomb[..bomb.len() - 2];
        let err = decode(&body("apps/v1", "Deployment", Msg::new().raw(cut))).unwrap_err();
        assert!(matches!(err, ProtobufError::LengthPastEnd { .. }), "{err}");

        // RawExtension JSON nested past serde_json's limit.
        let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let revision = Msg::new().message(2, Msg::new().bytes(1, deep_json.as_bytes()));
        let err = decode(&body("apps/v1", "ControllerRevision", revision)).unwrap_err();
        assert!(matches!(err, ProtobufError::NotJson { .. }), "{err}");
    }

    /// A deterministic stream of pseudo-random numbers (Knuth's MMIX LCG).
    struct Lcg(u64);

    impl Lcg {
        fn next_u32(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) as u32
        }

        fn bytes(&mut self, max: u32) -> Vec<u8> {
            let len = self.next_u32() % (max + 1);
            (0..len).map(|_| self.next_u32() as u8).collect()
        }
    }

    #[test]
    fn random_and_damaged_bodies_never_panic() {
        let mut lcg = Lcg(0x5eed);
        let deployment = kubectl_deployment();
        let mut decoded = 0;
        for round in 0..30_000 {
            let body = match round % 3 {
                // Noise after the magic.
                0 => {
                    let mut body = MAGIC.to_vec();
                    body.extend(lcg.bytes(64));
                    body
                }
                // Noise as a Pod's message.
                1 => body("v1", "Pod", Msg::new().raw(&lcg.bytes(96))),
                // kubectl's Deployment with a few bytes changed.
                _ => {
                    let mut body = deployment.clone();
                    for _ in 0..=lcg.next_u32() % 3 {
                        let at = MAGIC.len() + lcg.next_u32() as usize % (body.len() - MAGIC.len());
                        body[at] = lcg.next_u32() as u8;
                    }
                    body
                }
            };
            match decode(&body) {
                Ok(value) => {
                    decoded += 1;
                    assert!(value.is_object());
                }
                Err(err) => assert!(!err.to_string().is_empty()),
            }
        }
        // Some damaged bodies still decode; most noise does not.
        assert!(decoded > 0 && decoded < 30_000, "{decoded} decoded");
    }

    #[test]
    fn the_generated_schema_is_consistent() {
        for (index, message) in MESSAGES.iter().enumerate() {
            let fields = message.fields;
            assert!(
                fields.windows(2).all(|pair| pair[0].tag < pair[1].tag),
                "{} (message {index}): fields not sorted by tag",
                message.name
            );
            for field in message.fields {
                if let FieldKind::Message(target) | FieldKind::Inline(target) = field.kind {
                    assert!(
                        message_schema(target).is_ok(),
                        "{}.{}: no message {target}",
                        message.name,
                        field.json
                    );
                }
            }
        }
        for kind in KINDS {
            let message = message_schema(kind.message).unwrap();
            assert!(
                message.name.ends_with(&format!(".{}", kind.kind)),
                "{}/{} {} is {}",
                kind.group,
                kind.version,
                kind.kind,
                message.name
            );
        }
        let keys: Vec<_> = KINDS.iter().map(|k| (k.group, k.version, k.kind)).collect();
        assert!(keys.windows(2).all(|pair| pair[0] < pair[1]));
    }
}

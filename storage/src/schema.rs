//! The Arrow schema of a tape and the conversions between [`Exchange`]s and `RecordBatch`es.
//!
//! The schema is the contract between every tapedeck component and every outside tool that reads
//! tapes (DuckDB, Spark, pyarrow). It is versioned by [`SCHEMA_VERSION`], stored in each file's
//! key-value metadata under [`META_SCHEMA_VERSION`]. Adding a nullable column that a reader may
//! ignore is a minor change that keeps the version; anything else bumps it, and readers refuse
//! versions newer than theirs. Version 2 added `trace_id`, a nullable column, and bumped the
//! version anyway: an older tapedeck that copies exchanges (ticket bundles, HAR round trips)
//! would silently drop it, and without it dependency mocks lose their per-trace scoping. Readers
//! read every version from [`MIN_SCHEMA_VERSION`] on; columns a file lacks decode as their
//! defaults (`trace_id`: none).

use std::sync::{Arc, LazyLock};

use arrow_array::PrimitiveArray;
use arrow_array::builder::ArrayBuilder;
use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, FixedSizeBinaryBuilder, GenericByteBuilder, Int64Builder,
    PrimitiveBuilder, StringBuilder, TimestampMicrosecondBuilder, UInt16Builder, UInt32Builder,
    UInt64Builder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{ArrowPrimitiveType, ByteArrayType};
use arrow_array::types::{Int64Type, TimestampMicrosecondType, UInt16Type, UInt32Type, UInt64Type};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, FixedSizeBinaryArray, Int64Array, ListArray,
    RecordBatch, StringArray, StructArray, TimestampMicrosecondArray, UInt16Array, UInt32Array,
    UInt64Array,
};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use compact_str::CompactString;
use uuid::Uuid;

use crate::exchange::{ErrorKind, Exchange, Header};

/// Version of the tape schema this build writes and the newest it reads.
pub const SCHEMA_VERSION: u32 = 2;
/// The oldest schema version this build reads.
pub const MIN_SCHEMA_VERSION: u32 = 1;
/// File metadata key holding the schema version.
pub const META_SCHEMA_VERSION: &str = "tapedeck.schema_version";
/// File metadata key holding the version of the tapedeck build that wrote the file.
pub const META_WRITER_VERSION: &str = "tapedeck.writer_version";
/// File metadata key holding the host name of the writer.
pub const META_HOST: &str = "tapedeck.host";
/// File metadata key holding the segment id a sealed file was made from.
pub const META_SEGMENT: &str = "tapedeck.segment";

/// Column names, in schema order.
pub mod col {
    #![allow(missing_docs)]
    pub const ID: &str = "id";
    pub const SOURCE: &str = "source";
    pub const STARTED_AT: &str = "started_at";
    pub const TTFB_US: &str = "ttfb_us";
    pub const DURATION_US: &str = "duration_us";
    pub const TOTAL_US: &str = "total_us";
    pub const CLIENT_ADDR: &str = "client_addr";
    pub const METHOD: &str = "method";
    pub const SCHEME: &str = "scheme";
    pub const AUTHORITY: &str = "authority";
    pub const PATH: &str = "path";
    pub const QUERY: &str = "query";
    pub const HTTP_VERSION: &str = "http_version";
    pub const REQ_HEADERS: &str = "req_headers";
    pub const REQ_BODY: &str = "req_body";
    pub const REQ_BODY_SIZE: &str = "req_body_size";
    pub const REQ_BODY_TRUNCATED: &str = "req_body_truncated";
    pub const STATUS: &str = "status";
    pub const RESP_HEADERS: &str = "resp_headers";
    pub const RESP_BODY: &str = "resp_body";
    pub const RESP_BODY_SIZE: &str = "resp_body_size";
    pub const RESP_BODY_TRUNCATED: &str = "resp_body_truncated";
    pub const ERROR_KIND: &str = "error_kind";
    pub const ERROR: &str = "error";
    pub const FLAGS: &str = "flags";
    pub const ORIGIN_ID: &str = "origin_id";
    pub const TARGET: &str = "target";
    pub const SCHEDULED_AT: &str = "scheduled_at";
    pub const SENT_AT: &str = "sent_at";
    pub const TRACE_ID: &str = "trace_id";
}

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn header_fields() -> Fields {
    Fields::from(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("value", DataType::Binary, false),
    ])
}

fn header_item_field() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Struct(header_fields()), false))
}

fn headers_type() -> DataType {
    DataType::List(header_item_field())
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    use col::*;
    let f = Field::new;
    Arc::new(Schema::new(vec![
        f(ID, DataType::FixedSizeBinary(16), false),
        f(SOURCE, DataType::Utf8, false),
        f(STARTED_AT, timestamp_type(), false),
        f(TTFB_US, DataType::Int64, true),
        f(DURATION_US, DataType::Int64, true),
        f(TOTAL_US, DataType::Int64, true),
        f(CLIENT_ADDR, DataType::Utf8, true),
        f(METHOD, DataType::Utf8, false),
        f(SCHEME, DataType::Utf8, false),
        f(AUTHORITY, DataType::Utf8, false),
        f(PATH, DataType::Utf8, false),
        f(QUERY, DataType::Utf8, true),
        f(HTTP_VERSION, DataType::Utf8, false),
        f(REQ_HEADERS, headers_type(), false),
        f(REQ_BODY, DataType::Binary, false),
        f(REQ_BODY_SIZE, DataType::UInt64, false),
        f(REQ_BODY_TRUNCATED, DataType::Boolean, false),
        f(STATUS, DataType::UInt16, true),
        f(RESP_HEADERS, headers_type(), false),
        f(RESP_BODY, DataType::Binary, false),
        f(RESP_BODY_SIZE, DataType::UInt64, false),
        f(RESP_BODY_TRUNCATED, DataType::Boolean, false),
        f(ERROR_KIND, DataType::Utf8, true),
        f(ERROR, DataType::Utf8, true),
        f(FLAGS, DataType::UInt32, false),
        f(ORIGIN_ID, DataType::FixedSizeBinary(16), true),
        f(TARGET, DataType::Utf8, true),
        f(SCHEDULED_AT, timestamp_type(), true),
        f(SENT_AT, timestamp_type(), true),
        f(TRACE_ID, DataType::Utf8, true),
    ]))
});

/// The Arrow schema every tape file is written with.
pub fn tape_schema() -> SchemaRef {
    SCHEMA.clone()
}

/// Why a schema or a batch does not fit the tape schema. Every variant names the column; the
/// reader wraps it in [`crate::StorageError::Schema`], which adds the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// A column name that the tape schema does not have.
    #[error("unknown tape column `{name}`")]
    UnknownColumn {
        /// The name as asked for.
        name: String,
    },
    /// A tape column stored with a type this reader cannot decode.
    #[error("column `{column}` has type {found}, expected {expected}")]
    WrongType {
        /// The column.
        column: String,
        /// The type found.
        found: DataType,
        /// The type of the column in [`tape_schema`].
        expected: DataType,
    },
    /// A header column whose list items are not `(name: Utf8, value: Binary)` structs.
    #[error("column `{column}` has type {found}, which is not a list of (name, value) headers")]
    NotHeaders {
        /// The column.
        column: String,
        /// The type found.
        found: DataType,
    },
    /// A column every tape file must have is absent.
    #[error("required column `{column}` is missing")]
    MissingColumn {
        /// The column.
        column: &'static str,
    },
}

/// Indices of the named columns in [`tape_schema`]; unknown names are an error.
pub fn column_indices(names: &[&str]) -> Result<Vec<usize>, SchemaError> {
    names
        .iter()
        .map(|n| {
            SCHEMA.index_of(n).map_err(|_| SchemaError::UnknownColumn {
                name: (*n).to_owned(),
            })
        })
        .collect()
}

/// Finishes a string or binary column and starts the next one with room for as many rows and
/// bytes (at most `cap` bytes): a batch then costs one allocation per buffer, not a series of
/// doubling reallocations that copy what was already appended.
fn finish_bytes<T: ByteArrayType>(
    b: &mut GenericByteBuilder<T>,
    rows: usize,
    cap: usize,
) -> ArrayRef {
    let data = b.values_slice().len().min(cap);
    let out = b.finish();
    *b = GenericByteBuilder::with_capacity(rows, data);
    Arc::new(out)
}

/// [`finish_bytes`] for a fixed-width column.
fn finish_prim<T: ArrowPrimitiveType>(
    b: &mut PrimitiveBuilder<T>,
    rows: usize,
) -> PrimitiveArray<T> {
    let out = b.finish();
    *b = PrimitiveBuilder::with_capacity(rows);
    out
}

/// A header list column being built: one list per row of `{name, value}` structs.
#[derive(Debug, Default)]
struct HeadersBuilder {
    lengths: Vec<usize>,
    names: StringBuilder,
    values: BinaryBuilder,
}

impl HeadersBuilder {
    fn append(&mut self, hs: &[Header]) -> usize {
        let mut bytes = 0;
        for h in hs {
            self.names.append_value(&h.name);
            self.values.append_value(&h.value);
            bytes += h.name.len() + h.value.len();
        }
        self.lengths.push(hs.len());
        bytes
    }

    fn finish(&mut self, rows: usize, cap: usize) -> ArrayRef {
        let headers = self.names.len();
        let entries = StructArray::new(
            header_fields(),
            vec![
                finish_bytes(&mut self.names, headers, cap),
                finish_bytes(&mut self.values, headers, cap),
            ],
            None,
        );
        let lengths = std::mem::replace(&mut self.lengths, Vec::with_capacity(rows));
        let offsets = OffsetBuffer::from_lengths(lengths);
        Arc::new(ListArray::new(
            header_item_field(),
            offsets,
            Arc::new(entries),
            None,
        ))
    }
}

/// Builds a `RecordBatch` of [`tape_schema`] one exchange at a time, so that the caller can
/// drop each exchange as soon as it is appended (the spool thread does). [`encode`] is the
/// same for a slice.
#[derive(Debug)]
pub(crate) struct BatchEncoder {
    id: FixedSizeBinaryBuilder,
    source: StringBuilder,
    started_at: TimestampMicrosecondBuilder,
    ttfb: Int64Builder,
    duration: Int64Builder,
    total: Int64Builder,
    client_addr: StringBuilder,
    method: StringBuilder,
    scheme: StringBuilder,
    authority: StringBuilder,
    path: StringBuilder,
    query: StringBuilder,
    http_version: StringBuilder,
    req_headers: HeadersBuilder,
    req_body: BinaryBuilder,
    req_body_size: UInt64Builder,
    req_body_truncated: BooleanBuilder,
    status: UInt16Builder,
    resp_headers: HeadersBuilder,
    resp_body: BinaryBuilder,
    resp_body_size: UInt64Builder,
    resp_body_truncated: BooleanBuilder,
    error_kind: StringBuilder,
    error: StringBuilder,
    flags: UInt32Builder,
    origin_id: FixedSizeBinaryBuilder,
    target: StringBuilder,
    scheduled_at: TimestampMicrosecondBuilder,
    sent_at: TimestampMicrosecondBuilder,
    trace_id: StringBuilder,
    rows: usize,
    bytes: usize,
    /// The most bytes a column is pre-sized for after a batch.
    presize_cap: usize,
}

impl Default for BatchEncoder {
    fn default() -> Self {
        BatchEncoder {
            id: FixedSizeBinaryBuilder::new(16),
            source: StringBuilder::new(),
            started_at: TimestampMicrosecondBuilder::new(),
            ttfb: Int64Builder::new(),
            duration: Int64Builder::new(),
            total: Int64Builder::new(),
            client_addr: StringBuilder::new(),
            method: StringBuilder::new(),
            scheme: StringBuilder::new(),
            authority: StringBuilder::new(),
            path: StringBuilder::new(),
            query: StringBuilder::new(),
            http_version: StringBuilder::new(),
            req_headers: HeadersBuilder::default(),
            req_body: BinaryBuilder::new(),
            req_body_size: UInt64Builder::new(),
            req_body_truncated: BooleanBuilder::new(),
            status: UInt16Builder::new(),
            resp_headers: HeadersBuilder::default(),
            resp_body: BinaryBuilder::new(),
            resp_body_size: UInt64Builder::new(),
            resp_body_truncated: BooleanBuilder::new(),
            error_kind: StringBuilder::new(),
            error: StringBuilder::new(),
            flags: UInt32Builder::new(),
            origin_id: FixedSizeBinaryBuilder::new(16),
            target: StringBuilder::new(),
            scheduled_at: TimestampMicrosecondBuilder::new(),
            sent_at: TimestampMicrosecondBuilder::new(),
            trace_id: StringBuilder::new(),
            rows: 0,
            bytes: 0,
            presize_cap: 0,
        }
    }
}

impl BatchEncoder {
    /// An encoder that, after each batch, pre-sizes its columns for the next one like it (each
    /// column's data buffer for at most `presize_cap` bytes).
    pub(crate) fn with_presize_cap(presize_cap: usize) -> Self {
        BatchEncoder {
            presize_cap,
            ..BatchEncoder::default()
        }
    }

    /// Rows appended since the last [`finish`](Self::finish).
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Bytes of strings, header names and values and bodies appended since the last
    /// [`finish`](Self::finish): about what the finished batch holds.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Appends one exchange as a row.
    pub(crate) fn push(&mut self, x: &Exchange) {
        // Infallible: a uuid is always 16 bytes.
        let _ = self.id.append_value(x.id.as_bytes());
        self.source.append_value(&x.source);
        self.started_at.append_value(x.started_at_us);
        self.ttfb.append_option(x.ttfb_us);
        self.duration.append_option(x.duration_us);
        self.total.append_option(x.total_us);
        self.client_addr.append_option(x.client_addr.as_deref());
        self.method.append_value(&x.method);
        self.scheme.append_value(&x.scheme);
        self.authority.append_value(&x.authority);
        self.path.append_value(&x.path);
        self.query.append_option(x.query.as_deref());
        self.http_version.append_value(&x.http_version);
        let headers = self.req_headers.append(&x.req_headers);
        self.req_body.append_value(&x.req_body);
        self.req_body_size.append_value(x.req_body_size);
        self.req_body_truncated.append_value(x.req_body_truncated);
        self.status.append_option(x.status);
        let headers = headers + self.resp_headers.append(&x.resp_headers);
        self.resp_body.append_value(&x.resp_body);
        self.resp_body_size.append_value(x.resp_body_size);
        self.resp_body_truncated.append_value(x.resp_body_truncated);
        self.error_kind
            .append_option(x.error_kind.map(ErrorKind::as_str));
        self.error.append_option(x.error.as_deref());
        self.flags.append_value(x.flags);
        match x.origin_id {
            Some(o) => {
                let _ = self.origin_id.append_value(o.as_bytes());
            }
            None => self.origin_id.append_null(),
        }
        self.target.append_option(x.target.as_deref());
        self.scheduled_at.append_option(x.scheduled_at_us);
        self.sent_at.append_option(x.sent_at_us);
        self.trace_id.append_option(x.trace_id.as_deref());
        self.rows += 1;
        self.bytes += headers
            + x.req_body.len()
            + x.resp_body.len()
            + x.source.len()
            + x.authority.len()
            + x.path.len()
            + x.query.as_ref().map_or(0, String::len)
            + x.error.as_ref().map_or(0, String::len)
            + x.trace_id.as_ref().map_or(0, String::len)
            + 96;
    }

    /// The rows appended so far as a batch of `schema` (the tape schema, possibly with file
    /// metadata); the encoder is empty afterwards.
    pub(crate) fn finish(&mut self, schema: SchemaRef) -> RecordBatch {
        let (n, cap) = (self.rows, self.presize_cap);
        let ts = |b: &mut TimestampMicrosecondBuilder| -> ArrayRef {
            Arc::new(finish_prim(b, n).with_timezone("UTC"))
        };
        let id = std::mem::replace(&mut self.id, FixedSizeBinaryBuilder::with_capacity(n, 16));
        let origin = std::mem::replace(
            &mut self.origin_id,
            FixedSizeBinaryBuilder::with_capacity(n, 16),
        );
        let boolean = |b: &mut BooleanBuilder| -> ArrayRef {
            let out = b.finish();
            *b = BooleanBuilder::with_capacity(n);
            Arc::new(out)
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new({ id }.finish()),
            finish_bytes(&mut self.source, n, cap),
            ts(&mut self.started_at),
            Arc::new(finish_prim(&mut self.ttfb, n)),
            Arc::new(finish_prim(&mut self.duration, n)),
            Arc::new(finish_prim(&mut self.total, n)),
            finish_bytes(&mut self.client_addr, n, cap),
            finish_bytes(&mut self.method, n, cap),
            finish_bytes(&mut self.scheme, n, cap),
            finish_bytes(&mut self.authority, n, cap),
            finish_bytes(&mut self.path, n, cap),
            finish_bytes(&mut self.query, n, cap),
            finish_bytes(&mut self.http_version, n, cap),
            self.req_headers.finish(n, cap),
            finish_bytes(&mut self.req_body, n, cap),
            Arc::new(finish_prim(&mut self.req_body_size, n)),
            boolean(&mut self.req_body_truncated),
            Arc::new(finish_prim(&mut self.status, n)),
            self.resp_headers.finish(n, cap),
            finish_bytes(&mut self.resp_body, n, cap),
            Arc::new(finish_prim(&mut self.resp_body_size, n)),
            boolean(&mut self.resp_body_truncated),
            finish_bytes(&mut self.error_kind, n, cap),
            finish_bytes(&mut self.error, n, cap),
            Arc::new(finish_prim(&mut self.flags, n)),
            Arc::new({ origin }.finish()),
            finish_bytes(&mut self.target, n, cap),
            ts(&mut self.scheduled_at),
            ts(&mut self.sent_at),
            finish_bytes(&mut self.trace_id, n, cap),
        ];
        self.rows = 0;
        self.bytes = 0;
        // The arrays are built for the tape schema's columns, in its order and with its types
        // and nullability, so this cannot fail; a failure is a bug in this type, caught by the
        // round-trip tests.
        #[allow(clippy::expect_used)]
        RecordBatch::try_new(schema, columns).expect("BatchEncoder builds the tape schema")
    }
}

/// Encodes exchanges as one `RecordBatch` of [`tape_schema`].
pub fn encode(exchanges: &[Exchange]) -> RecordBatch {
    let mut e = BatchEncoder::default();
    for x in exchanges {
        e.push(x);
    }
    e.finish(tape_schema())
}

/// A column of a batch being decoded, resolved once per batch with its type checked.
enum Col<'a, T: ?Sized> {
    Missing,
    Present(&'a T),
}

impl<'a, T: ?Sized> Col<'a, T> {
    fn get(&self) -> Option<&'a T> {
        match self {
            Col::Missing => None,
            Col::Present(a) => Some(*a),
        }
    }
}

fn resolve<'a, T: ?Sized>(
    batch: &'a RecordBatch,
    name: &str,
    cast: impl FnOnce(&'a dyn Array) -> Option<&'a T>,
) -> Result<Col<'a, T>, SchemaError> {
    match batch.column_by_name(name) {
        None => Ok(Col::Missing),
        Some(a) => cast(a.as_ref())
            .map(Col::Present)
            .ok_or_else(|| SchemaError::WrongType {
                column: name.to_owned(),
                found: a.data_type().clone(),
                expected: SCHEMA
                    .field_with_name(name)
                    .map_or(DataType::Null, |f| f.data_type().clone()),
            }),
    }
}

/// Columns of one batch, resolved for decoding. Missing columns (projected away) decode to the
/// field's default.
struct Decoder<'a> {
    id: Col<'a, FixedSizeBinaryArray>,
    source: Col<'a, StringArray>,
    started_at: Col<'a, TimestampMicrosecondArray>,
    ttfb: Col<'a, Int64Array>,
    duration: Col<'a, Int64Array>,
    total: Col<'a, Int64Array>,
    client_addr: Col<'a, StringArray>,
    method: Col<'a, StringArray>,
    scheme: Col<'a, StringArray>,
    authority: Col<'a, StringArray>,
    path: Col<'a, StringArray>,
    query: Col<'a, StringArray>,
    http_version: Col<'a, StringArray>,
    req_headers: Option<HeadersCol<'a>>,
    req_body: Col<'a, BinaryArray>,
    req_body_size: Col<'a, UInt64Array>,
    req_body_truncated: Col<'a, BooleanArray>,
    status: Col<'a, UInt16Array>,
    resp_headers: Option<HeadersCol<'a>>,
    resp_body: Col<'a, BinaryArray>,
    resp_body_size: Col<'a, UInt64Array>,
    resp_body_truncated: Col<'a, BooleanArray>,
    error_kind: Col<'a, StringArray>,
    error: Col<'a, StringArray>,
    flags: Col<'a, UInt32Array>,
    origin_id: Col<'a, FixedSizeBinaryArray>,
    target: Col<'a, StringArray>,
    scheduled_at: Col<'a, TimestampMicrosecondArray>,
    sent_at: Col<'a, TimestampMicrosecondArray>,
    trace_id: Col<'a, StringArray>,
}

fn s<'a>(b: &'a RecordBatch, n: &str) -> Result<Col<'a, StringArray>, SchemaError> {
    resolve(b, n, |a| a.as_string_opt::<i32>())
}
fn bin<'a>(b: &'a RecordBatch, n: &str) -> Result<Col<'a, BinaryArray>, SchemaError> {
    resolve(b, n, |a| a.as_binary_opt::<i32>())
}
fn i64c<'a>(b: &'a RecordBatch, n: &str) -> Result<Col<'a, Int64Array>, SchemaError> {
    resolve(b, n, |a| a.as_primitive_opt::<Int64Type>())
}
fn u64c<'a>(b: &'a RecordBatch, n: &str) -> Result<Col<'a, UInt64Array>, SchemaError> {
    resolve(b, n, |a| a.as_primitive_opt::<UInt64Type>())
}
fn tsc<'a>(b: &'a RecordBatch, n: &str) -> Result<Col<'a, TimestampMicrosecondArray>, SchemaError> {
    resolve(b, n, |a| a.as_primitive_opt::<TimestampMicrosecondType>())
}
fn boolc<'a>(b: &'a RecordBatch, n: &str) -> Result<Col<'a, BooleanArray>, SchemaError> {
    resolve(b, n, |a| a.as_boolean_opt())
}
fn uuidc<'a>(b: &'a RecordBatch, n: &str) -> Result<Col<'a, FixedSizeBinaryArray>, SchemaError> {
    resolve(b, n, |a| {
        a.as_fixed_size_binary_opt()
            .filter(|a| a.value_length() == 16)
    })
}
fn headersc<'a>(b: &'a RecordBatch, n: &str) -> Result<Col<'a, ListArray>, SchemaError> {
    let col = resolve(b, n, |a| a.as_list_opt::<i32>())?;
    if let Col::Present(list) = &col {
        let ok = list.values().as_struct_opt().is_some_and(|st| {
            st.num_columns() == 2
                && st.column(0).as_string_opt::<i32>().is_some()
                && st.column(1).as_binary_opt::<i32>().is_some()
        });
        if !ok {
            return Err(SchemaError::NotHeaders {
                column: n.to_owned(),
                found: list.data_type().clone(),
            });
        }
    }
    Ok(col)
}

fn str_at(c: &Col<'_, StringArray>, i: usize) -> Option<String> {
    c.get()
        .filter(|a| a.is_valid(i))
        .map(|a| a.value(i).to_owned())
}
fn cstr_at(c: &Col<'_, StringArray>, i: usize) -> Option<CompactString> {
    c.get()
        .filter(|a| a.is_valid(i))
        .map(|a| CompactString::new(a.value(i)))
}
fn i64_at(c: &Col<'_, Int64Array>, i: usize) -> Option<i64> {
    c.get().filter(|a| a.is_valid(i)).map(|a| a.value(i))
}
fn ts_at(c: &Col<'_, TimestampMicrosecondArray>, i: usize) -> Option<i64> {
    c.get().filter(|a| a.is_valid(i)).map(|a| a.value(i))
}
fn bytes_at(c: &Col<'_, BinaryArray>, i: usize) -> Bytes {
    c.get()
        .filter(|a| a.is_valid(i))
        .map(|a| Bytes::copy_from_slice(a.value(i)))
        .unwrap_or_default()
}
fn bool_at(c: &Col<'_, BooleanArray>, i: usize) -> bool {
    c.get().is_some_and(|a| a.is_valid(i) && a.value(i))
}
fn u64_at(c: &Col<'_, UInt64Array>, i: usize) -> u64 {
    c.get().filter(|a| a.is_valid(i)).map_or(0, |a| a.value(i))
}
fn uuid_at(c: &Col<'_, FixedSizeBinaryArray>, i: usize) -> Option<Uuid> {
    c.get()
        .filter(|a| a.is_valid(i))
        .and_then(|a| Uuid::from_slice(a.value(i)).ok())
}
/// A headers column (a list of `{name, value}` structs) resolved once per batch: the list's
/// offsets index straight into the flat name and value arrays, so reading a row slices no
/// array (no `Arc`s built and dropped per row).
struct HeadersCol<'a> {
    list: &'a ListArray,
    names: &'a StringArray,
    values: &'a BinaryArray,
}

impl<'a> HeadersCol<'a> {
    /// `None` when the column is absent (projected away). [`headersc`] checked the struct.
    fn of(c: &Col<'a, ListArray>) -> Option<Self> {
        let list = c.get()?;
        let st = list.values().as_struct_opt()?;
        Some(Self {
            list,
            names: st.column(0).as_string_opt::<i32>()?,
            values: st.column(1).as_binary_opt::<i32>()?,
        })
    }

    /// Row `i`'s headers. Their values are copied into one buffer (one allocation per row, not
    /// per header), each value a slice of it.
    fn at(&self, i: usize) -> Vec<Header> {
        if !self.list.is_valid(i) {
            return Vec::new();
        }
        let offsets = self.list.value_offsets();
        let (Some(&start), Some(&end)) = (offsets.get(i), offsets.get(i + 1)) else {
            return Vec::new();
        };
        let (start, end) = (start.max(0) as usize, end.max(0) as usize);
        let end = end.min(self.names.len()).min(self.values.len());
        if start >= end {
            return Vec::new();
        }
        let vo = self.values.value_offsets();
        let (lo, hi) = (vo[start].max(0) as usize, vo[end].max(0) as usize);
        let buf = self
            .values
            .value_data()
            .get(lo..hi)
            .map(Bytes::copy_from_slice)
            .unwrap_or_default();
        (start..end)
            .map(|j| Header {
                name: if self.names.is_valid(j) {
                    CompactString::new(self.names.value(j))
                } else {
                    CompactString::default()
                },
                value: if self.values.is_valid(j) {
                    let (a, b) = (vo[j].max(0) as usize, vo[j + 1].max(0) as usize);
                    match (a.checked_sub(lo), b.checked_sub(lo)) {
                        (Some(a), Some(b)) if a <= b && b <= buf.len() => buf.slice(a..b),
                        _ => Bytes::copy_from_slice(self.values.value(j)),
                    }
                } else {
                    Bytes::new()
                },
            })
            .collect()
    }
}

fn headers_at(c: &Option<HeadersCol<'_>>, i: usize) -> Vec<Header> {
    c.as_ref().map_or_else(Vec::new, |h| h.at(i))
}

impl<'a> Decoder<'a> {
    fn new(b: &'a RecordBatch) -> Result<Self, SchemaError> {
        use col::*;
        Ok(Self {
            id: uuidc(b, ID)?,
            source: s(b, SOURCE)?,
            started_at: tsc(b, STARTED_AT)?,
            ttfb: i64c(b, TTFB_US)?,
            duration: i64c(b, DURATION_US)?,
            total: i64c(b, TOTAL_US)?,
            client_addr: s(b, CLIENT_ADDR)?,
            method: s(b, METHOD)?,
            scheme: s(b, SCHEME)?,
            authority: s(b, AUTHORITY)?,
            path: s(b, PATH)?,
            query: s(b, QUERY)?,
            http_version: s(b, HTTP_VERSION)?,
            req_headers: HeadersCol::of(&headersc(b, REQ_HEADERS)?),
            req_body: bin(b, REQ_BODY)?,
            req_body_size: u64c(b, REQ_BODY_SIZE)?,
            req_body_truncated: boolc(b, REQ_BODY_TRUNCATED)?,
            status: resolve(b, STATUS, |a| a.as_primitive_opt::<UInt16Type>())?,
            resp_headers: HeadersCol::of(&headersc(b, RESP_HEADERS)?),
            resp_body: bin(b, RESP_BODY)?,
            resp_body_size: u64c(b, RESP_BODY_SIZE)?,
            resp_body_truncated: boolc(b, RESP_BODY_TRUNCATED)?,
            error_kind: s(b, ERROR_KIND)?,
            error: s(b, ERROR)?,
            flags: resolve(b, FLAGS, |a| a.as_primitive_opt::<UInt32Type>())?,
            origin_id: uuidc(b, ORIGIN_ID)?,
            target: s(b, TARGET)?,
            scheduled_at: tsc(b, SCHEDULED_AT)?,
            sent_at: tsc(b, SENT_AT)?,
            trace_id: s(b, TRACE_ID)?,
        })
    }

    /// Row `i`; absent or null required columns take [`Exchange::default`]'s values (built
    /// only when needed: this runs once per row of every scan).
    fn row(&self, i: usize) -> Exchange {
        let or = |v: Option<CompactString>, d: &'static str| {
            v.unwrap_or_else(|| CompactString::const_new(d))
        };
        Exchange {
            id: uuid_at(&self.id, i).unwrap_or(Uuid::nil()),
            source: cstr_at(&self.source, i).unwrap_or_default(),
            started_at_us: ts_at(&self.started_at, i).unwrap_or(0),
            ttfb_us: i64_at(&self.ttfb, i),
            duration_us: i64_at(&self.duration, i),
            total_us: i64_at(&self.total, i),
            client_addr: cstr_at(&self.client_addr, i),
            method: or(cstr_at(&self.method, i), "GET"),
            scheme: or(cstr_at(&self.scheme, i), "http"),
            authority: cstr_at(&self.authority, i).unwrap_or_default(),
            path: or(cstr_at(&self.path, i), "/"),
            query: str_at(&self.query, i),
            http_version: or(cstr_at(&self.http_version, i), "HTTP/1.1"),
            req_headers: headers_at(&self.req_headers, i),
            req_body: bytes_at(&self.req_body, i),
            req_body_size: u64_at(&self.req_body_size, i),
            req_body_truncated: bool_at(&self.req_body_truncated, i),
            status: self
                .status
                .get()
                .filter(|a| a.is_valid(i))
                .map(|a| a.value(i)),
            resp_headers: headers_at(&self.resp_headers, i),
            resp_body: bytes_at(&self.resp_body, i),
            resp_body_size: u64_at(&self.resp_body_size, i),
            resp_body_truncated: bool_at(&self.resp_body_truncated, i),
            error_kind: str_at(&self.error_kind, i).map(|k| ErrorKind::parse(&k)),
            error: str_at(&self.error, i),
            flags: self
                .flags
                .get()
                .filter(|a| a.is_valid(i))
                .map_or(0, |a| a.value(i)),
            origin_id: uuid_at(&self.origin_id, i),
            target: str_at(&self.target, i),
            scheduled_at_us: ts_at(&self.scheduled_at, i),
            sent_at_us: ts_at(&self.sent_at, i),
            trace_id: str_at(&self.trace_id, i),
        }
    }
}

/// Decodes every row of a batch. Columns absent from the batch (projected away) decode to their
/// defaults; a column of an unexpected type is an error naming it.
pub fn decode(batch: &RecordBatch) -> Result<Vec<Exchange>, SchemaError> {
    let d = Decoder::new(batch)?;
    Ok((0..batch.num_rows()).map(|i| d.row(i)).collect())
}

/// Checks that every column of `schema` that tapedeck knows has the type tapedeck expects.
/// Unknown extra columns are allowed (a newer minor version may add nullable columns).
pub fn check_schema(schema: &Schema) -> Result<(), SchemaError> {
    for field in schema.fields() {
        if let Ok(ours) = SCHEMA.field_with_name(field.name())
            && !types_compatible(ours.data_type(), field.data_type())
        {
            return Err(SchemaError::WrongType {
                column: field.name().clone(),
                found: field.data_type().clone(),
                expected: ours.data_type().clone(),
            });
        }
    }
    for required in [col::ID, col::STARTED_AT, col::METHOD, col::PATH] {
        if schema.field_with_name(required).is_err() {
            return Err(SchemaError::MissingColumn { column: required });
        }
    }
    Ok(())
}

fn types_compatible(ours: &DataType, theirs: &DataType) -> bool {
    match (ours, theirs) {
        (DataType::List(a), DataType::List(b)) => types_compatible(a.data_type(), b.data_type()),
        (DataType::Struct(a), DataType::Struct(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b.iter())
                    .all(|(x, y)| types_compatible(x.data_type(), y.data_type()))
        }
        (DataType::Timestamp(u1, _), DataType::Timestamp(u2, _)) => u1 == u2,
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests;

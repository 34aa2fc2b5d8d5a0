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

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType, UInt16Type, UInt32Type, UInt64Type};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, FixedSizeBinaryArray, GenericListArray, Int64Array,
    ListArray, RecordBatch, StringArray, StructArray, TimestampMicrosecondArray, UInt16Array,
    UInt32Array, UInt64Array,
};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
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

/// Indices of the named columns in [`tape_schema`]; unknown names are an error.
pub fn column_indices(names: &[&str]) -> Result<Vec<usize>, String> {
    names
        .iter()
        .map(|n| {
            SCHEMA
                .index_of(n)
                .map_err(|_| format!("unknown tape column `{n}`"))
        })
        .collect()
}

fn strings<'a>(it: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(it))
}

fn opt_strings<'a>(it: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(StringArray::from_iter(it))
}

fn uuids(it: impl Iterator<Item = Option<Uuid>>, len: usize) -> ArrayRef {
    let arr = FixedSizeBinaryArray::try_from_sparse_iter_with_size(
        it.map(|u| u.map(|u| *u.as_bytes())),
        16,
    );
    match arr {
        Ok(a) => Arc::new(a),
        // Only reachable for an iterator of zero items, which Arrow cannot size.
        Err(_) => Arc::new(FixedSizeBinaryArray::new_null(16, len)),
    }
}

fn headers_array<'a>(lists: impl Iterator<Item = &'a [Header]>) -> ArrayRef {
    let mut offsets = Vec::new();
    let mut names = Vec::new();
    let mut values: Vec<&[u8]> = Vec::new();
    for hs in lists {
        offsets.push(hs.len());
        for h in hs {
            names.push(h.name.as_str());
            values.push(&h.value);
        }
    }
    let entries = StructArray::new(
        header_fields(),
        vec![
            Arc::new(StringArray::from_iter_values(names)),
            Arc::new(BinaryArray::from_iter_values(values)),
        ],
        None,
    );
    Arc::new(ListArray::new(
        header_item_field(),
        OffsetBuffer::from_lengths(offsets),
        Arc::new(entries),
        None,
    ))
}

/// Encodes exchanges as one `RecordBatch` of [`tape_schema`].
pub fn encode(exchanges: &[Exchange]) -> RecordBatch {
    let n = exchanges.len();
    let e = exchanges;
    let ts = |it: Vec<Option<i64>>| -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from(it).with_timezone("UTC"))
    };
    let columns: Vec<ArrayRef> = vec![
        uuids(e.iter().map(|x| Some(x.id)), n),
        strings(e.iter().map(|x| x.source.as_str())),
        ts(e.iter().map(|x| Some(x.started_at_us)).collect()),
        Arc::new(Int64Array::from_iter(e.iter().map(|x| x.ttfb_us))),
        Arc::new(Int64Array::from_iter(e.iter().map(|x| x.duration_us))),
        Arc::new(Int64Array::from_iter(e.iter().map(|x| x.total_us))),
        opt_strings(e.iter().map(|x| x.client_addr.as_deref())),
        strings(e.iter().map(|x| x.method.as_str())),
        strings(e.iter().map(|x| x.scheme.as_str())),
        strings(e.iter().map(|x| x.authority.as_str())),
        strings(e.iter().map(|x| x.path.as_str())),
        opt_strings(e.iter().map(|x| x.query.as_deref())),
        strings(e.iter().map(|x| x.http_version.as_str())),
        headers_array(e.iter().map(|x| x.req_headers.as_slice())),
        Arc::new(BinaryArray::from_iter_values(
            e.iter().map(|x| &x.req_body[..]),
        )),
        Arc::new(UInt64Array::from_iter_values(
            e.iter().map(|x| x.req_body_size),
        )),
        Arc::new(BooleanArray::from_iter(
            e.iter().map(|x| Some(x.req_body_truncated)),
        )),
        Arc::new(UInt16Array::from_iter(e.iter().map(|x| x.status))),
        headers_array(e.iter().map(|x| x.resp_headers.as_slice())),
        Arc::new(BinaryArray::from_iter_values(
            e.iter().map(|x| &x.resp_body[..]),
        )),
        Arc::new(UInt64Array::from_iter_values(
            e.iter().map(|x| x.resp_body_size),
        )),
        Arc::new(BooleanArray::from_iter(
            e.iter().map(|x| Some(x.resp_body_truncated)),
        )),
        opt_strings(e.iter().map(|x| x.error_kind.map(ErrorKind::as_str))),
        opt_strings(e.iter().map(|x| x.error.as_deref())),
        Arc::new(UInt32Array::from_iter_values(e.iter().map(|x| x.flags))),
        uuids(e.iter().map(|x| x.origin_id), n),
        opt_strings(e.iter().map(|x| x.target.as_deref())),
        ts(e.iter().map(|x| x.scheduled_at_us).collect()),
        ts(e.iter().map(|x| x.sent_at_us).collect()),
        opt_strings(e.iter().map(|x| x.trace_id.as_deref())),
    ];
    // The arrays are built from the schema above, so this cannot fail; a failure is a bug in
    // this function, caught by the round-trip tests.
    #[allow(clippy::expect_used)]
    RecordBatch::try_new(tape_schema(), columns).expect("encode builds arrays matching the schema")
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
) -> Result<Col<'a, T>, String> {
    match batch.column_by_name(name) {
        None => Ok(Col::Missing),
        Some(a) => cast(a.as_ref()).map(Col::Present).ok_or_else(|| {
            format!(
                "column `{name}` has type {} which this reader does not expect",
                a.data_type()
            )
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
    req_headers: Col<'a, ListArray>,
    req_body: Col<'a, BinaryArray>,
    req_body_size: Col<'a, UInt64Array>,
    req_body_truncated: Col<'a, BooleanArray>,
    status: Col<'a, UInt16Array>,
    resp_headers: Col<'a, ListArray>,
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

fn s<'a>(b: &'a RecordBatch, n: &str) -> Result<Col<'a, StringArray>, String> {
    resolve(b, n, |a| a.as_string_opt::<i32>())
}
fn bin<'a>(b: &'a RecordBatch, n: &str) -> Result<Col<'a, BinaryArray>, String> {
    resolve(b, n, |a| a.as_binary_opt::<i32>())
}
fn i64c<'a>(b: &'a RecordBatch, n: &str) -> Result<Col<'a, Int64Array>, String> {
    resolve(b, n, |a| a.as_primitive_opt::<Int64Type>())
}
fn u64c<'a>(b: &'a RecordBatch, n: &str) -> Result<Col<'a, UInt64Array>, String> {
    resolve(b, n, |a| a.as_primitive_opt::<UInt64Type>())
}
fn tsc<'a>(b: &'a RecordBatch, n: &str) -> Result<Col<'a, TimestampMicrosecondArray>, String> {
    resolve(b, n, |a| a.as_primitive_opt::<TimestampMicrosecondType>())
}
fn boolc<'a>(b: &'a RecordBatch, n: &str) -> Result<Col<'a, BooleanArray>, String> {
    resolve(b, n, |a| a.as_boolean_opt())
}
fn uuidc<'a>(b: &'a RecordBatch, n: &str) -> Result<Col<'a, FixedSizeBinaryArray>, String> {
    resolve(b, n, |a| {
        a.as_fixed_size_binary_opt()
            .filter(|a| a.value_length() == 16)
    })
}
fn headersc<'a>(b: &'a RecordBatch, n: &str) -> Result<Col<'a, ListArray>, String> {
    let col = resolve(b, n, |a| a.as_list_opt::<i32>())?;
    if let Col::Present(list) = &col {
        let ok = list.values().as_struct_opt().is_some_and(|st| {
            st.num_columns() == 2
                && st.column(0).as_string_opt::<i32>().is_some()
                && st.column(1).as_binary_opt::<i32>().is_some()
        });
        if !ok {
            return Err(format!(
                "column `{n}` is not a list of (name, value) headers"
            ));
        }
    }
    Ok(col)
}

fn str_at(c: &Col<'_, StringArray>, i: usize) -> Option<String> {
    c.get()
        .filter(|a| a.is_valid(i))
        .map(|a| a.value(i).to_owned())
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
fn headers_at(c: &Col<'_, GenericListArray<i32>>, i: usize) -> Vec<Header> {
    let Some(list) = c.get().filter(|a| a.is_valid(i)) else {
        return Vec::new();
    };
    let entries = list.value(i);
    let Some(st) = entries.as_struct_opt() else {
        return Vec::new();
    };
    let (Some(names), Some(values)) = (
        st.column(0).as_string_opt::<i32>(),
        st.column(1).as_binary_opt::<i32>(),
    ) else {
        return Vec::new();
    };
    (0..st.len())
        .map(|j| Header {
            name: if names.is_valid(j) {
                names.value(j).to_owned()
            } else {
                String::new()
            },
            value: if values.is_valid(j) {
                Bytes::copy_from_slice(values.value(j))
            } else {
                Bytes::new()
            },
        })
        .collect()
}

impl<'a> Decoder<'a> {
    fn new(b: &'a RecordBatch) -> Result<Self, String> {
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
            req_headers: headersc(b, REQ_HEADERS)?,
            req_body: bin(b, REQ_BODY)?,
            req_body_size: u64c(b, REQ_BODY_SIZE)?,
            req_body_truncated: boolc(b, REQ_BODY_TRUNCATED)?,
            status: resolve(b, STATUS, |a| a.as_primitive_opt::<UInt16Type>())?,
            resp_headers: headersc(b, RESP_HEADERS)?,
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

    fn row(&self, i: usize) -> Exchange {
        let d = Exchange::default();
        Exchange {
            id: uuid_at(&self.id, i).unwrap_or(d.id),
            source: str_at(&self.source, i).unwrap_or(d.source),
            started_at_us: ts_at(&self.started_at, i).unwrap_or(d.started_at_us),
            ttfb_us: i64_at(&self.ttfb, i),
            duration_us: i64_at(&self.duration, i),
            total_us: i64_at(&self.total, i),
            client_addr: str_at(&self.client_addr, i),
            method: str_at(&self.method, i).unwrap_or(d.method),
            scheme: str_at(&self.scheme, i).unwrap_or(d.scheme),
            authority: str_at(&self.authority, i).unwrap_or(d.authority),
            path: str_at(&self.path, i).unwrap_or(d.path),
            query: str_at(&self.query, i),
            http_version: str_at(&self.http_version, i).unwrap_or(d.http_version),
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
pub fn decode(batch: &RecordBatch) -> Result<Vec<Exchange>, String> {
    let d = Decoder::new(batch)?;
    Ok((0..batch.num_rows()).map(|i| d.row(i)).collect())
}

/// Checks that every column of `schema` that tapedeck knows has the type tapedeck expects.
/// Unknown extra columns are allowed (a newer minor version may add nullable columns).
pub fn check_schema(schema: &Schema) -> Result<(), String> {
    for field in schema.fields() {
        if let Ok(ours) = SCHEMA.field_with_name(field.name())
            && !types_compatible(ours.data_type(), field.data_type())
        {
            return Err(format!(
                "column `{}` has type {}, expected {}",
                field.name(),
                field.data_type(),
                ours.data_type()
            ));
        }
    }
    for required in [col::ID, col::STARTED_AT, col::METHOD, col::PATH] {
        if schema.field_with_name(required).is_err() {
            return Err(format!("required column `{required}` is missing"));
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

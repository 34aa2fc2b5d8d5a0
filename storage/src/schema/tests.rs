//! Unit tests of `schema.rs`.

use super::*;

/// The tape schema with one field replaced (`None`: removed).
fn schema_with(name: &str, replacement: Option<Field>) -> Schema {
    Schema::new(
        tape_schema()
            .fields()
            .iter()
            .filter_map(|f| {
                if f.name() == name {
                    replacement.clone()
                } else {
                    Some(f.as_ref().clone())
                }
            })
            .collect::<Vec<_>>(),
    )
}

#[test]
fn column_indices_name_an_unknown_column() {
    assert_eq!(column_indices(&[col::ID, col::PATH]), Ok(vec![0, 10]));
    let err = column_indices(&[col::ID, "pathh"]).expect_err("unknown column");
    assert_eq!(
        err,
        SchemaError::UnknownColumn {
            name: "pathh".into()
        }
    );
    assert_eq!(err.to_string(), "unknown tape column `pathh`");
}

#[test]
fn check_schema_names_a_column_of_the_wrong_type() {
    assert_eq!(check_schema(&tape_schema()), Ok(()));
    let schema = schema_with(
        col::METHOD,
        Some(Field::new(col::METHOD, DataType::Int64, false)),
    );
    let err = check_schema(&schema).expect_err("wrong type");
    assert_eq!(
        err,
        SchemaError::WrongType {
            column: col::METHOD.into(),
            found: DataType::Int64,
            expected: DataType::Utf8,
        }
    );
    assert_eq!(
        err.to_string(),
        "column `method` has type Int64, expected Utf8"
    );
}

#[test]
fn check_schema_names_a_missing_required_column() {
    let err = check_schema(&schema_with(col::PATH, None)).expect_err("missing");
    assert_eq!(err, SchemaError::MissingColumn { column: col::PATH });
    assert_eq!(err.to_string(), "required column `path` is missing");
    // An optional column may be missing (projected away, or an older version).
    assert_eq!(check_schema(&schema_with(col::TRACE_ID, None)), Ok(()));
}

#[test]
fn decode_names_a_column_of_the_wrong_type() {
    let status: ArrayRef = Arc::new(Int64Array::from(vec![200_i64]));
    let batch = RecordBatch::try_from_iter([(col::STATUS, status)]).expect("batch");
    let err = decode(&batch).expect_err("wrong type");
    assert_eq!(
        err,
        SchemaError::WrongType {
            column: col::STATUS.into(),
            found: DataType::Int64,
            expected: DataType::UInt16,
        }
    );
    assert_eq!(
        err.to_string(),
        "column `status` has type Int64, expected UInt16"
    );
}

#[test]
fn decode_names_a_header_column_that_is_not_headers() {
    let values = StringArray::from(vec!["content-type"]);
    let item = Arc::new(Field::new("item", DataType::Utf8, false));
    let list = ListArray::new(
        item,
        OffsetBuffer::from_lengths([1]),
        Arc::new(values),
        None,
    );
    let found = list.data_type().clone();
    let batch = RecordBatch::try_from_iter([(col::REQ_HEADERS, Arc::new(list) as ArrayRef)])
        .expect("batch");
    let err = decode(&batch).expect_err("not headers");
    assert_eq!(
        err,
        SchemaError::NotHeaders {
            column: col::REQ_HEADERS.into(),
            found: found.clone(),
        }
    );
    assert_eq!(
        err.to_string(),
        format!(
            "column `req_headers` has type {found}, which is not a list of (name, value) headers"
        )
    );
}

#[test]
fn decode_reads_a_batch_of_the_tape_schema() {
    let ex = Exchange {
        method: "POST".into(),
        path: "/a".into(),
        status: Some(201),
        ..Exchange::default()
    };
    let got = decode(&encode(std::slice::from_ref(&ex))).expect("decodes");
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].method.as_str(), got[0].status), ("POST", Some(201)));
}

//! DragBench `meta_data.pkl` files written by Python's pickle with NumPy
//! (tests/fixtures/pickle, from scripts/make_fixtures.py) read back in Rust.

use gooddrag::pickle::{Value, parse_pickle};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/pickle")
            .join(name),
    )
    .unwrap()
}

fn check_mask(v: &Value) {
    let Some(Value::Array(a)) = v.get("mask") else {
        panic!("no mask array: {v:?}")
    };
    assert_eq!(a.shape, vec![48, 64]);
    let m = a.to_f64().unwrap();
    assert_eq!(m.iter().sum::<f64>(), 20.0 * 35.0);
    // First set pixel: row 10, column 5.
    let first = m.iter().position(|&x| x > 0.0).unwrap();
    assert_eq!((first / 64, first % 64), (10, 5));
}

#[test]
fn every_protocol_reads_prompt_points_and_mask() {
    for proto in 2..=5 {
        let v = parse_pickle(&fixture(&format!("meta_p{proto}.pkl")))
            .unwrap_or_else(|e| panic!("protocol {proto}: {e}"));
        assert_eq!(
            v.get("prompt"),
            Some(&Value::Str("a photo of a cat".into())),
            "protocol {proto}"
        );
        let points: Vec<Vec<f64>> = v
            .get("points")
            .unwrap()
            .items()
            .unwrap()
            .iter()
            .map(|p| {
                p.items()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect()
            })
            .collect();
        assert_eq!(
            points,
            vec![
                vec![12.0, 20.0],
                vec![30.0, 22.0],
                vec![50.0, 40.0],
                vec![41.0, 8.0]
            ]
        );
        check_mask(&v);
    }
}

#[test]
fn float_zero_mask_big_endian_and_fortran_arrays() {
    let v = parse_pickle(&fixture("meta_float_mask.pkl")).unwrap();
    let Some(Value::Array(a)) = v.get("mask") else {
        panic!()
    };
    assert!(a.dtype.ends_with("f4"));
    assert!(a.to_f64().unwrap().iter().all(|&x| x == 0.0));
    let v = parse_pickle(&fixture("meta_odd_layout.pkl")).unwrap();
    check_mask(&v);
}

#[test]
fn truncated_and_code_carrying_pickles_are_refused() {
    let bytes = fixture("meta_p4.pkl");
    assert!(parse_pickle(&bytes[..bytes.len() / 2]).is_err());
    // cos.system("echo hi") — a classic malicious pickle: refused, never run.
    let evil = b"cos\nsystem\n(S'echo hi'\ntR.";
    let err = parse_pickle(evil).unwrap_err().to_string();
    assert!(err.contains("os.system"), "{err}");
    assert!(parse_pickle(b"").is_err());
}

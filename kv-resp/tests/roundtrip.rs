//! Property tests: encoding then decoding gives the frame back (in both protocol versions
//! where the version can represent it), and any split of a valid stream into reads decodes to
//! the same frames.

use bytes::{Bytes, BytesMut};
use kv_resp::{CommandDecoder, Encoder, Frame, FrameDecoder, Protocol, encode_command};
use proptest::collection::vec;
use proptest::prelude::*;

/// Text for simple strings and errors: any bytes but `\r` and `\n`.
fn line_text() -> impl Strategy<Value = Bytes> {
    vec(
        any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
        0..12,
    )
    .prop_map(Bytes::from)
}

fn binary() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        vec(any::<u8>(), 0..40),
        // Bytes that look like protocol inside a bulk.
        Just(b"\r\n$-1\r\n*3\r\n".to_vec()),
    ]
    .prop_map(Bytes::from)
}

fn double() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("NaN is not equal to itself", |d| !d.is_nan()),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(0.0),
        Just(-0.0),
        (-1000i32..1000).prop_map(f64::from),
    ]
}

fn big_number() -> impl Strategy<Value = Bytes> {
    "-?[0-9]{1,40}".prop_map(Bytes::from)
}

/// RESP2 frames (which RESP2 and RESP3 both carry, `NullArray` aside).
fn resp2_leaf() -> impl Strategy<Value = Frame> {
    prop_oneof![
        line_text().prop_map(Frame::Simple),
        line_text().prop_map(Frame::Error),
        any::<i64>().prop_map(Frame::Integer),
        binary().prop_map(Frame::Bulk),
        Just(Frame::Null),
        Just(Frame::NullArray),
    ]
}

fn resp2_frame() -> impl Strategy<Value = Frame> {
    resp2_leaf().prop_recursive(4, 64, 6, |inner| vec(inner, 0..6).prop_map(Frame::Array))
}

/// Any frame, RESP3 types included, `NullArray` left out (RESP3 has a single null).
fn resp3_frame() -> impl Strategy<Value = Frame> {
    let leaf = prop_oneof![
        line_text().prop_map(Frame::Simple),
        line_text().prop_map(Frame::Error),
        any::<i64>().prop_map(Frame::Integer),
        binary().prop_map(Frame::Bulk),
        Just(Frame::Null),
        double().prop_map(Frame::Double),
        any::<bool>().prop_map(Frame::Boolean),
        binary().prop_map(Frame::BulkError),
        (any::<[u8; 3]>(), binary()).prop_map(|(format, text)| Frame::Verbatim { format, text }),
        big_number().prop_map(Frame::BigNumber),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Frame::Array),
            vec(inner.clone(), 0..6).prop_map(Frame::Set),
            vec(inner.clone(), 0..6).prop_map(Frame::Push),
            vec((inner.clone(), inner.clone()), 0..4).prop_map(Frame::Map),
            (vec((inner.clone(), inner.clone()), 0..3), inner).prop_map(|(attributes, f)| {
                Frame::Attribute {
                    attributes,
                    frame: Box::new(f),
                }
            }),
        ]
    })
}

/// What a RESP2 client reads back for `frame`: Redis's downgrades.
fn downgraded(frame: &Frame) -> Frame {
    let text = |d: f64| {
        let mut out = BytesMut::new();
        Encoder::new(Protocol::Resp3).double(&mut out, d);
        // `,<text>\r\n`
        Bytes::copy_from_slice(&out[1..out.len() - 2])
    };
    match frame {
        Frame::Double(d) => Frame::Bulk(text(*d)),
        Frame::Boolean(b) => Frame::Integer(i64::from(*b)),
        Frame::BulkError(e) => Frame::Error(
            e.iter()
                .map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c })
                .collect::<Vec<u8>>()
                .into(),
        ),
        Frame::Verbatim { text, .. } => Frame::Bulk(text.clone()),
        Frame::BigNumber(n) => Frame::Bulk(n.clone()),
        Frame::Array(v) | Frame::Set(v) | Frame::Push(v) => {
            Frame::Array(v.iter().map(downgraded).collect())
        }
        Frame::Map(pairs) => Frame::Array(
            pairs
                .iter()
                .flat_map(|(k, v)| [downgraded(k), downgraded(v)])
                .collect(),
        ),
        Frame::Attribute { frame, .. } => downgraded(frame),
        other => other.clone(),
    }
}

fn encode(protocol: Protocol, frames: &[Frame]) -> BytesMut {
    let mut out = BytesMut::new();
    for f in frames {
        Encoder::new(protocol).frame(&mut out, f);
    }
    out
}

/// Decodes `bytes` fed in chunks ending at `cuts`, checking no frame is left over.
fn decode_in_chunks(bytes: &[u8], cuts: &[usize]) -> Vec<Frame> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.push(bytes.len());
    cuts.sort_unstable();
    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut from = 0;
    for cut in cuts {
        buf.extend_from_slice(&bytes[from..cut]);
        from = cut;
        while let Some(f) = decoder.decode(&mut buf).expect("valid stream") {
            out.push(f);
        }
    }
    assert!(buf.is_empty(), "bytes left over: {buf:?}");
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn resp3_frames_round_trip(frame in resp3_frame()) {
        let bytes = encode(Protocol::Resp3, std::slice::from_ref(&frame));
        prop_assert_eq!(decode_in_chunks(&bytes, &[]), vec![frame]);
    }

    #[test]
    fn resp2_frames_round_trip_in_both_versions(frame in resp2_frame()) {
        let bytes = encode(Protocol::Resp2, std::slice::from_ref(&frame));
        prop_assert_eq!(decode_in_chunks(&bytes, &[]), vec![frame.clone()]);
        // RESP3 has one null: the null array comes back as the null.
        fn one_null(f: &Frame) -> Frame {
            match f {
                Frame::NullArray => Frame::Null,
                Frame::Array(v) => Frame::Array(v.iter().map(one_null).collect()),
                f => f.clone(),
            }
        }
        let bytes = encode(Protocol::Resp3, std::slice::from_ref(&frame));
        prop_assert_eq!(decode_in_chunks(&bytes, &[]), vec![one_null(&frame)]);
    }

    #[test]
    fn resp2_encoding_of_resp3_frames_is_redis_downgrade(frame in resp3_frame()) {
        let bytes = encode(Protocol::Resp2, std::slice::from_ref(&frame));
        prop_assert_eq!(decode_in_chunks(&bytes, &[]), vec![downgraded(&frame)]);
    }

    #[test]
    fn any_split_of_a_frame_stream_decodes_the_same(
        frames in vec(resp3_frame(), 1..8),
        cuts in vec(any::<usize>(), 0..12),
    ) {
        let bytes = encode(Protocol::Resp3, &frames);
        prop_assert_eq!(decode_in_chunks(&bytes, &cuts), frames);
    }

    #[test]
    fn any_split_of_a_command_stream_decodes_the_same(
        commands in vec(vec(vec(any::<u8>(), 0..20), 1..6), 1..10),
        inline_ping in vec(any::<bool>(), 10),
        cuts in vec(any::<usize>(), 0..12),
    ) {
        let mut bytes = BytesMut::new();
        let mut want: Vec<Vec<Bytes>> = Vec::new();
        for (args, ping) in commands.iter().zip(&inline_ping) {
            encode_command(&mut bytes, args);
            want.push(args.iter().map(|a| Bytes::copy_from_slice(a)).collect());
            if *ping {
                bytes.extend_from_slice(b"PING\r\n");
                want.push(vec![Bytes::from_static(b"PING")]);
            }
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.push(bytes.len());
        cuts.sort_unstable();
        let mut decoder = CommandDecoder::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut from = 0;
        for cut in cuts {
            buf.extend_from_slice(&bytes[from..cut]);
            from = cut;
            while let Some(c) = decoder.decode(&mut buf).expect("valid stream") {
                got.push(c.into_args());
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert!(!decoder.is_partial());
        prop_assert_eq!(got, want);
    }

    #[test]
    fn quoted_inline_arguments_round_trip(args in vec(vec(any::<u8>(), 0..12), 1..6)) {
        // Quote every argument as redis-cli would let a user type it: printable ASCII as is,
        // anything else as \xHH.
        let mut line = Vec::new();
        for a in &args {
            line.push(b'"');
            for &c in a {
                match c {
                    b'"' | b'\\' => line.extend_from_slice(&[b'\\', c]),
                    0x20..=0x7e => line.push(c),
                    _ => line.extend_from_slice(format!("\\x{c:02x}").as_bytes()),
                }
            }
            line.extend_from_slice(b"\" ");
        }
        line.extend_from_slice(b"\r\n");
        let mut buf = BytesMut::from(&line[..]);
        let cmd = CommandDecoder::new().decode(&mut buf).expect("valid").expect("complete");
        let got: Vec<Vec<u8>> = cmd.into_args().into_iter().map(|b| b.to_vec()).collect();
        prop_assert_eq!(got, args);
    }
}

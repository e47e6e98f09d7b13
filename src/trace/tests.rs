//! The trace analysis's unit tests.

use super::*;

fn rec(pos: usize, layer: Option<usize>, tensor: TensorName, v: Vec<f32>) -> TraceRecord {
    TraceRecord {
        pos,
        index: pos,
        layer,
        tensor,
        values: v,
    }
}

#[test]
fn nmse_and_max_abs() {
    let (n, m) = measure(&[1.0, 2.0], &[1.0, 2.2]);
    assert!((n - 0.04 / 5.0).abs() < 1e-7, "{n}");
    assert!((m - 0.2).abs() < 1e-6);
    assert_eq!(measure(&[0.0], &[0.0]).0, 0.0);
    assert_eq!(measure(&[0.0], &[1.0]).0, f64::INFINITY);
    assert!(measure(&[1.0], &[f32::NAN]).0.is_nan());
}

#[test]
fn first_fail_is_first_in_forward_order_and_names_the_cause() {
    let t = TensorName::MlpOut;
    let pre = vec![
        rec(5, Some(2), TensorName::AttnOut, vec![1.0, 1.0]),
        rec(5, Some(2), t, vec![1.0, 1.0]),
        rec(5, Some(4), TensorName::Q, vec![1.0, 1.0]),
        rec(5, None, TensorName::Logits, vec![1.0, 1.0]),
    ];
    let mut dec = pre.clone();
    dec[1].values = vec![1.01, 1.01];
    dec[2].values = vec![2.0, 2.0];
    let tr = analyze(
        "p",
        "p",
        RunDtype::F32,
        &pre,
        &dec,
        &[0, 1, 2, 3, 4, 42],
        1e-8,
    );
    assert_eq!(tr.compared(), 4);
    assert_eq!(tr.failed(), 2);
    let p = &tr.positions[0];
    assert_eq!(p.token_id, Some(42));
    assert_eq!(p.first_fail, Some((Some(2), t)));
    assert_eq!(p.root_cause, RootCause::Mlp);
}

#[test]
fn unpaired_records_are_trace_offsets_with_the_other_sides_positions() {
    let pre = vec![rec(7, Some(0), TensorName::Q, vec![1.0])];
    let dec = vec![
        rec(8, Some(0), TensorName::Q, vec![1.0]),
        rec(9, Some(0), TensorName::Q, vec![1.0]),
    ];
    let tr = analyze("p", "p", RunDtype::F32, &pre, &dec, &[], 1e-8);
    assert_eq!(tr.missing(), 3);
    assert_eq!(tr.compared(), 0);
    let p = &tr.positions[0];
    assert_eq!(p.root_cause, RootCause::TraceOffset);
    assert!(
        p.details
            .contains("only in prefill; decode has positions 8–9"),
        "{}",
        p.details
    );
    assert_eq!(p.token_id, None);
}

#[test]
fn same_position_different_token_is_a_trace_offset() {
    let pre = vec![rec(7, Some(0), TensorName::Q, vec![1.0])];
    let mut dec = pre.clone();
    dec[0].index = 6;
    let tr = analyze("p", "p", RunDtype::F32, &pre, &dec, &[], 1e-8);
    assert_eq!(tr.missing(), 1);
    assert_eq!(tr.positions[0].root_cause, RootCause::TraceOffset);
    assert!(
        tr.positions[0]
            .details
            .contains("token 7 of the sequence in prefill but token 6")
    );
}

#[test]
fn sink_keeps_selected_positions_layers_and_tensors_inside_its_window() {
    let sel = TraceSelection {
        layers: Some([1].into()),
        tensors: [TensorName::Q, TensorName::Logits].into(),
        positions: [3, 4, 9].into(),
    };
    let mut sink = TraceSink::new(sel);
    let x = Tensor::arange(0f32, 12.0, &candle_core::Device::Cpu)
        .unwrap()
        .reshape((1, 6, 2))
        .unwrap();
    sink.record(Some(1), TensorName::Q, &x, 0, 0).unwrap();
    sink.record(Some(0), TensorName::Q, &x, 0, 0).unwrap();
    sink.record(Some(1), TensorName::K, &x, 0, 0).unwrap();
    assert_eq!(sink.records.len(), 2);
    assert_eq!(sink.records[0].values, vec![6.0, 7.0]);
    sink.set_window(0..4);
    sink.record(None, TensorName::Logits, &x, 0, 0).unwrap();
    assert_eq!(sink.records.len(), 3, "position 4 is outside the window");
    // A shifted path labels the token at index 3 as position 4.
    sink.record(None, TensorName::Logits, &x, 0, 1).unwrap();
    assert_eq!(sink.records.last().unwrap().pos, 4);
    assert_eq!(sink.records.last().unwrap().values, vec![6.0, 7.0]);
}

#[test]
fn thresholds_scale_with_the_dtype() {
    let f32t = default_nmse_threshold(RunDtype::F32);
    let bf = default_nmse_threshold(RunDtype::Bf16);
    let f16t = default_nmse_threshold(RunDtype::F16);
    assert!(f32t < f16t && f16t < bf);
    // ε = 1e-2 on one tensor is an NMSE of 1e-4: caught in f32.
    assert!(1e-4 > f32t);
}

/// One position's records at `layers` (attn_norm and mlp_out each), and the analysis with
/// decode's records from `from` on scaled, over a 10-layer model.
fn gap_case(layers: &[usize], from: (Option<usize>, TensorName)) -> PositionResult {
    let mut pre = vec![rec(3, None, TensorName::Embed, vec![1.0])];
    for &l in layers {
        pre.push(rec(3, Some(l), TensorName::AttnNorm, vec![1.0]));
        pre.push(rec(3, Some(l), TensorName::MlpOut, vec![1.0]));
    }
    pre.push(rec(3, None, TensorName::FinalNorm, vec![1.0]));
    pre.push(rec(3, None, TensorName::Logits, vec![1.0]));
    let key = forward_order(from.0, from.1);
    let dec: Vec<TraceRecord> = pre
        .iter()
        .map(|r| TraceRecord {
            values: if forward_order(r.layer, r.tensor) >= key {
                vec![2.0]
            } else {
                vec![1.0]
            },
            ..r.clone()
        })
        .collect();
    let t = analyze("p", "p", RunDtype::F32, &pre, &dec, &[7; 4], 1e-8).with_layer_count(10);
    t.positions[0].clone()
}

#[test]
fn a_first_failure_after_untraced_layers_is_an_untraced_gap() {
    // Layers 5–7 untraced, layer 8's first record already fails: the cause may lie in 5–7.
    let p = gap_case(&[0, 1, 2, 4, 8], (Some(8), TensorName::AttnNorm));
    assert_eq!(p.root_cause, RootCause::UntracedGap);
    assert_eq!(p.first_fail, Some((Some(8), TensorName::AttnNorm)));
    let gap = p.untraced.unwrap();
    assert_eq!((gap.first, gap.last, gap.stage), (5, 7, RootCause::Norm));
    assert_eq!(gap.suggestion(), "layers: [5, 6, 7]");
    assert!(p.details.contains("layers 5–7 not traced"), "{}", p.details);
    // Untraced layers before the first traced one count as well.
    let p = gap_case(&[3, 4], (Some(3), TensorName::AttnNorm));
    assert_eq!(p.untraced.map(|g| (g.first, g.last)), Some((0, 2)));
    // After the last traced layer: known from the model's layer count.
    let p = gap_case(&[0, 1, 2], (None, TensorName::FinalNorm));
    assert_eq!(p.untraced.map(|g| (g.first, g.last)), Some((3, 9)));
}

#[test]
fn a_passing_record_of_the_failing_layer_clears_the_gap() {
    // Negative controls: layer 8's attn_norm passes, so layers 5–7 handed on agreeing inputs.
    let p = gap_case(&[0, 1, 2, 4, 8], (Some(8), TensorName::MlpOut));
    assert_eq!(p.root_cause, RootCause::Mlp);
    assert_eq!(p.untraced, None);
    // No gap: layer 2 follows traced layer 1.
    let p = gap_case(&[0, 1, 2, 4, 8], (Some(2), TensorName::AttnNorm));
    assert_eq!(p.root_cause, RootCause::Norm);
    // final_norm passes before a failing logits: LM_HEAD stays.
    let p = gap_case(&[0, 1, 2], (None, TensorName::Logits));
    assert_eq!(p.root_cause, RootCause::LmHead);
    // Every layer traced: no gap.
    let all: Vec<usize> = (0..10).collect();
    let p = gap_case(&all, (None, TensorName::FinalNorm));
    assert_eq!(p.root_cause, RootCause::Norm);
}

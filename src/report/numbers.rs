//! Small number helpers the report's sections share.

/// The mean of `xs`, or `None` when there are none.
pub(crate) fn mean(xs: impl IntoIterator<Item = f32>) -> Option<f32> {
    let v: Vec<f32> = xs.into_iter().collect();
    (!v.is_empty()).then(|| v.iter().sum::<f32>() / v.len() as f32)
}

/// A duration in words: milliseconds below a second, else seconds.
pub(crate) fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

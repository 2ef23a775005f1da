//! `f32` values as people wrote them. Serde formats that hold only `f64`
//! (TOML, `serde_json::Value`) widen an `f32` bit for bit, so a configured
//! `0.9` comes back as `0.8999999761581421` in `config show` and the settings
//! API. Serialising the f64 nearest to the f32's shortest decimal form keeps `0.9`.

/// The `f64` that prints as `v`'s shortest round-trip decimal (`0.9f32` → `0.9`).
pub fn f32_as_written_f64(v: f32) -> f64 {
    if !v.is_finite() {
        return f64::from(v);
    }
    v.to_string().parse().unwrap_or(f64::from(v))
}

/// `#[serde(serialize_with = "gatewarden_core::floats::f32_as_written")]` for an `f32` field.
pub fn f32_as_written<S: serde::Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(f32_as_written_f64(*v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_f32_prints_as_written_and_reads_back_the_same() {
        for v in [0.9f32, 0.1, 0.85, 1.0, 0.0, 1e-7, 3.4e38, -2.5] {
            let w = f32_as_written_f64(v);
            assert_eq!(w.to_string(), v.to_string(), "{v}");
            assert_eq!(w as f32, v, "round trip of {v}");
        }
        assert_ne!(f64::from(0.9f32).to_string(), "0.9", "the widening this module exists for");
        assert!(f32_as_written_f64(f32::NAN).is_nan());
    }
}

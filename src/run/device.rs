//! The device a sweep runs on: opened once, named for the manifest, probed per dtype.

use candle_core::{Device, Tensor};

use crate::config::DeviceSpec;
use crate::dtype::RunDtype;

/// Why a sweep cannot run on a device, or not in a dtype there: its pairs are then SKIPPED
/// with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// The binary was built without the device's cargo feature.
    #[error("device `{device}`: this binary was built without the `{feature}` feature")]
    NotBuilt {
        /// The device as the sweep names it (`cuda:0`).
        device: String,
        /// The cargo feature it needs.
        feature: String,
    },
    /// The driver could not open the device.
    #[error("device `{device}` is not available: {reason}")]
    Unavailable {
        /// The device as the sweep names it.
        device: String,
        /// The driver's error.
        reason: String,
    },
    /// The device cannot compute a step in this dtype.
    #[error("{dtype} is not supported on this device: {reason}")]
    Dtype {
        /// The dtype.
        dtype: RunDtype,
        /// candle's error.
        reason: String,
    },
}

/// An opened device.
#[derive(Debug, Clone)]
pub struct OpenDevice {
    /// The candle device.
    pub device: Device,
    /// Canonical id: `cpu`, `cuda:N` or `metal:N` (report.json `device`).
    pub id: String,
    /// Human-readable name (report.json `device_name`).
    pub name: String,
}

impl OpenDevice {
    /// What a cost measured here holds for: the id and name, and on a CPU its SIMD level too
    /// (two CPUs both named "AMD EPYC" can be a Zen 2 with AVX2 and a Zen 4 with AVX-512, and
    /// the machines this runs on change from day to day).
    pub fn kind(&self) -> String {
        if self.device.is_cpu() {
            format!("{}|{}|{}", self.id, self.name, cpu_simd())
        } else {
            format!("{}|{}", self.id, self.name)
        }
    }
}

/// The SIMD features that pick candle's and driftsweep's kernels, named as /proc/cpuinfo
/// names them, as the CPU reports them to this process (CPUID, which gemm, candle and the
/// kernels here read): under an emulator or a VM that hides features, /proc/cpuinfo would
/// name the host's, not the ones the code runs with. Empty on other architectures.
pub fn cpu_simd() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let levels = [
            ("avx2", is_x86_feature_detected!("avx2")),
            ("fma", is_x86_feature_detected!("fma")),
            ("f16c", is_x86_feature_detected!("f16c")),
            ("avx512f", is_x86_feature_detected!("avx512f")),
            ("avx512_bf16", is_x86_feature_detected!("avx512bf16")),
            ("amx_tile", amx_tile()),
        ];
        let have: Vec<&str> = levels.iter().filter(|l| l.1).map(|l| l.0).collect();
        have.join(",")
    }
    #[cfg(not(target_arch = "x86_64"))]
    String::new()
}

/// CPUID leaf 7's AMX-TILE bit (`is_x86_feature_detected!("amx-tile")` is not stable Rust).
#[cfg(target_arch = "x86_64")]
fn amx_tile() -> bool {
    // CPUID exists on every x86-64 CPU; leaf 7 only where leaf 0 says so.
    let max_leaf = std::arch::x86_64::__cpuid(0).eax;
    max_leaf >= 7 && std::arch::x86_64::__cpuid_count(7, 0).edx & (1 << 24) != 0
}

/// Opens the device a sweep asks for; `Err` says why it cannot run here (its pairs are then
/// SKIPPED with that reason, never silently moved to the CPU).
pub fn open_device(spec: DeviceSpec) -> Result<OpenDevice, DeviceError> {
    match spec {
        DeviceSpec::Cpu => Ok(OpenDevice {
            device: Device::Cpu,
            id: "cpu".into(),
            name: cpu_name(),
        }),
        DeviceSpec::Auto if candle_core::utils::cuda_is_available() => {
            open_device(DeviceSpec::Cuda(0))
        }
        DeviceSpec::Auto if candle_core::utils::metal_is_available() => {
            open_device(DeviceSpec::Metal(0))
        }
        DeviceSpec::Auto => open_device(DeviceSpec::Cpu),
        DeviceSpec::Cuda(n) => open_gpu(
            spec,
            "cuda",
            candle_core::utils::cuda_is_available(),
            || Device::new_cuda(n),
        ),
        DeviceSpec::Metal(n) => open_gpu(
            spec,
            "metal",
            candle_core::utils::metal_is_available(),
            || Device::new_metal(n),
        ),
    }
}

fn open_gpu(
    spec: DeviceSpec,
    feature: &str,
    built: bool,
    open: impl FnOnce() -> candle_core::Result<Device>,
) -> Result<OpenDevice, DeviceError> {
    if !built {
        return Err(DeviceError::NotBuilt {
            device: spec.to_string(),
            feature: feature.to_string(),
        });
    }
    let device = open().map_err(|e| DeviceError::Unavailable {
        device: spec.to_string(),
        reason: e.to_string(),
    })?;
    let name = gpu_name(&device).unwrap_or_else(|| spec.to_string());
    Ok(OpenDevice {
        device,
        id: spec.to_string(),
        name,
    })
}

/// The GPU's marketing name with its compute capability, from the CUDA driver
/// ("NVIDIA H100 80GB HBM3 (sm_90)"); the manifest needs it to tell two results apart.
#[cfg(feature = "cuda")]
fn gpu_name(device: &Device) -> Option<String> {
    let Device::Cuda(d) = device else {
        return None;
    };
    let stream = d.cuda_stream();
    let ctx = stream.context();
    let name = ctx.name().ok()?;
    Some(match ctx.compute_capability() {
        Ok((major, minor)) => format!("{name} (sm_{major}{minor})"),
        Err(_) => name,
    })
}

#[cfg(not(feature = "cuda"))]
fn gpu_name(_device: &Device) -> Option<String> {
    None
}

/// Whether `device` can compute in `dtype`: the operations a decoder step needs (matmul,
/// softmax, RMS norm, a cast back to f32) are tried on a tiny tensor. `Err` says why not, so
/// that the pairs of that dtype are SKIPPED with the reason rather than failing one by one.
pub fn dtype_support(device: &Device, dtype: RunDtype) -> Result<(), DeviceError> {
    let probe = || -> candle_core::Result<()> {
        let a = Tensor::ones((2, 8), dtype.candle(), device)?;
        let b = Tensor::ones((8, 2), dtype.candle(), device)?;
        let c = a.matmul(&b)?;
        let c = candle_nn::ops::softmax_last_dim(&c)?;
        let w = Tensor::ones(2, dtype.candle(), device)?;
        let c = candle_nn::ops::rms_norm(&c, &w, 1e-5)?;
        c.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        Ok(())
    };
    probe().map_err(|e| DeviceError::Dtype {
        dtype,
        reason: e.to_string(),
    })
}

/// The CPU's model name (Linux /proc/cpuinfo), with the number of threads available.
fn cpu_name() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{model} ({threads} threads)")
}

#[cfg(test)]
mod tests {
    use super::cpu_simd;

    /// The features named are the ones this process detects, in a fixed order; a level
    /// implies the ones below it. `scripts/feature_levels.sh` reads the printed line to check
    /// that qemu gave the tests the level it asked for.
    #[test]
    fn simd_names_the_features_this_process_detects() {
        let simd = cpu_simd();
        println!("cpu features: {}", simd.replace(',', " "));
        let have: Vec<&str> = simd.split(',').filter(|f| !f.is_empty()).collect();
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(have.contains(&"avx2"), is_x86_feature_detected!("avx2"));
            assert_eq!(
                have.contains(&"avx512f"),
                is_x86_feature_detected!("avx512f")
            );
            if have.contains(&"avx512f") {
                assert!(have.contains(&"avx2") && have.contains(&"fma"), "{simd}");
            }
            let order = ["avx2", "fma", "f16c", "avx512f", "avx512_bf16", "amx_tile"];
            let mut known = order.iter().filter(|f| have.contains(f));
            assert!(have.iter().all(|h| known.next() == Some(h)), "{simd}");
        }
        #[cfg(not(target_arch = "x86_64"))]
        assert!(have.is_empty());
    }
}

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

/// The SIMD features that pick candle's and driftsweep's kernels, from /proc/cpuinfo's flags
/// (empty where that file is absent).
fn cpu_simd() -> String {
    const LEVELS: [&str; 6] = ["avx2", "fma", "f16c", "avx512f", "avx512_bf16", "amx_tile"];
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = flags
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.split_whitespace().collect())
        .unwrap_or_default();
    let have: Vec<&str> = LEVELS.into_iter().filter(|f| flags.contains(f)).collect();
    have.join(",")
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

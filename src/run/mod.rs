//! One run: the prefill path or the decode path over a pair's tokens, on a loaded model
//! (`forward`), runs limited to compared positions (`positions`), and the choice of the
//! device it runs on (`device`).

mod device;
mod forward;
mod positions;
#[cfg(test)]
mod tests;

pub use device::{DeviceError, OpenDevice, dtype_support, open_device};
pub use forward::{Instruments, RunOutput, decode, prefill, under_test};
pub use positions::{SearchInput, prefill_at, rows_at, search_first_divergence, select_rows};

//! The machine's memory, and whether a model about to be loaded fits.

/// A `kB` field of `/proc/meminfo`, in bytes.
fn meminfo(field: &str) -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kb: usize = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Physical memory, where the OS says.
pub fn total_bytes() -> Option<usize> {
    meminfo("MemTotal:")
}

/// Memory the OS can still give out, where it says.
pub fn available_bytes() -> Option<usize> {
    meminfo("MemAvailable:")
}

fn gib(bytes: usize) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// An error before loading when `what` needs more than the memory
/// available (`available`, or the OS's figure), with what would help.
pub fn check_fits(what: &str, needed: usize, available: Option<usize>) -> Result<(), String> {
    let Some(available) = available.or_else(available_bytes) else {
        return Ok(());
    };
    if needed <= available {
        return Ok(());
    }
    Err(format!(
        "{what} needs {:.1} GiB of memory in this form and {:.1} GiB is available: keep its weights compressed (UNETLoader's weight_dtype q8_0 or fp8_e4m3fn, or a GGUF file from `weft quantize`), or free memory",
        gib(needed),
        gib(available)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_larger_than_memory_is_refused_with_both_sizes() {
        assert!(check_fits("x", 1 << 30, Some(2 << 30)).is_ok());
        let err = check_fits("Flux transformer", 48 << 30, Some(20 << 30)).unwrap_err();
        assert!(
            err.contains("48.0 GiB") && err.contains("20.0 GiB"),
            "{err}"
        );
        assert!(err.contains("q8_0"), "{err}");
    }

    #[test]
    fn this_machine_reports_its_memory() {
        let total = total_bytes().unwrap();
        assert!(available_bytes().unwrap() <= total);
    }
}

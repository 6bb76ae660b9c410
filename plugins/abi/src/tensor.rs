//! DLPack ↔ candle: export shares a tensor's storage (no copy), import
//! validates a foreign tensor and copies it once into candle.

use std::ffi::c_void;

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};

use crate::{
    DLDataType, DLDevice, DLManagedTensorVersioned, DLPackVersion, DLTensor, DLPACK_FLAG_READ_ONLY,
    DLPACK_MAJOR, DLPACK_MINOR, DL_BFLOAT, DL_CPU, DL_FLOAT, DL_INT, DL_UINT,
};

/// The most dimensions an imported tensor may have.
pub const MAX_DIMS: i32 = 16;

/// Owns what an exported tensor points into; `managed` comes first so the
/// deleter can get back from the DLPack pointer to the whole box.
#[repr(C)]
struct Exported {
    managed: DLManagedTensorVersioned,
    _tensor: Tensor,
    _shape: Vec<i64>,
    _strides: Vec<i64>,
}

unsafe extern "C" fn delete_exported(managed: *mut DLManagedTensorVersioned) {
    if !managed.is_null() {
        drop(Box::from_raw(managed.cast::<Exported>()));
    }
}

fn dl_dtype(dtype: DType) -> DLDataType {
    let (code, bits) = match dtype {
        DType::U8 => (DL_UINT, 8),
        DType::U32 => (DL_UINT, 32),
        DType::I64 => (DL_INT, 64),
        DType::BF16 => (DL_BFLOAT, 16),
        DType::F16 => (DL_FLOAT, 16),
        DType::F32 => (DL_FLOAT, 32),
        DType::F64 => (DL_FLOAT, 64),
        _ => (DL_FLOAT, 0),
    };
    DLDataType {
        code,
        bits,
        lanes: 1,
    }
}

fn candle_dtype(dtype: DLDataType) -> Option<DType> {
    if dtype.lanes != 1 {
        return None;
    }
    Some(match (dtype.code, dtype.bits) {
        (DL_UINT, 8) => DType::U8,
        (DL_UINT, 32) => DType::U32,
        (DL_INT, 64) => DType::I64,
        (DL_FLOAT, 32) => DType::F32,
        (DL_FLOAT, 64) => DType::F64,
        _ => return None,
    })
}

/// Shares a CPU tensor's storage as a read-only DLPack tensor. The storage
/// stays alive until the receiver calls the deleter.
pub fn export(tensor: &Tensor) -> Result<*mut DLManagedTensorVersioned, String> {
    let (storage, layout) = tensor.storage_and_layout();
    let data: *const c_void = match &*storage {
        Storage::Cpu(cpu) => match cpu {
            CpuStorage::U8(v) => v.as_ptr().cast(),
            CpuStorage::U32(v) => v.as_ptr().cast(),
            CpuStorage::I64(v) => v.as_ptr().cast(),
            CpuStorage::F32(v) => v.as_ptr().cast(),
            CpuStorage::F64(v) => v.as_ptr().cast(),
            _ => return Err(format!("cannot export {:?} tensors", tensor.dtype())),
        },
        _ => return Err("only CPU tensors cross the plugin boundary".into()),
    };
    let mut shape: Vec<i64> = layout.dims().iter().map(|&d| d as i64).collect();
    let mut strides: Vec<i64> = layout.stride().iter().map(|&s| s as i64).collect();
    let byte_offset = (layout.start_offset() * tensor.dtype().size_in_bytes()) as u64;
    drop(storage);
    let exported = Box::new(Exported {
        managed: DLManagedTensorVersioned {
            version: DLPackVersion {
                major: DLPACK_MAJOR,
                minor: DLPACK_MINOR,
            },
            manager_ctx: std::ptr::null_mut(),
            deleter: Some(delete_exported),
            flags: DLPACK_FLAG_READ_ONLY,
            dl_tensor: DLTensor {
                data: data as *mut c_void,
                device: DLDevice {
                    device_type: DL_CPU,
                    device_id: 0,
                },
                ndim: shape.len() as i32,
                dtype: dl_dtype(tensor.dtype()),
                shape: shape.as_mut_ptr(),
                strides: strides.as_mut_ptr(),
                byte_offset,
            },
        },
        _tensor: tensor.clone(),
        _shape: shape,
        _strides: strides,
    });
    Ok(Box::into_raw(exported).cast())
}

/// Frees an exported tensor that was never handed over (an error path).
///
/// # Safety
/// `managed` must come from a DLPack producer and not have been deleted.
pub unsafe fn delete(managed: *mut DLManagedTensorVersioned) {
    if let Some(deleter) = managed.as_ref().and_then(|m| m.deleter) {
        deleter(managed);
    }
}

/// Takes ownership of a tensor another party produced: checks it, copies it
/// into candle, and calls its deleter, whether or not it was valid.
///
/// # Safety
/// `managed` must be null or a pointer a DLPack producer handed over.
pub unsafe fn import_owned(managed: *mut DLManagedTensorVersioned) -> Result<Tensor, String> {
    let result = import_borrowed(managed);
    delete(managed);
    result
}

/// Copies a tensor that stays owned by someone else (inputs during a call).
///
/// # Safety
/// `managed` must be null or point to a live DLPack tensor whose `shape`,
/// `strides` and data are readable as it describes.
pub unsafe fn import_borrowed(managed: *const DLManagedTensorVersioned) -> Result<Tensor, String> {
    let managed = managed.as_ref().ok_or("the tensor pointer is null")?;
    if managed.version.major != DLPACK_MAJOR {
        return Err(format!(
            "DLPack version {}.{}, expected {DLPACK_MAJOR}.x",
            managed.version.major, managed.version.minor
        ));
    }
    let t = &managed.dl_tensor;
    if t.device.device_type != DL_CPU {
        return Err(format!(
            "device type {} is not the CPU ({DL_CPU})",
            t.device.device_type
        ));
    }
    let dtype = candle_dtype(t.dtype).ok_or_else(|| {
        format!(
            "dtype (code {}, {} bits, {} lanes) is not one of f32, f64, i64, u32, u8",
            t.dtype.code, t.dtype.bits, t.dtype.lanes
        )
    })?;
    if !(0..=MAX_DIMS).contains(&t.ndim) {
        return Err(format!("ndim {} is outside 0..={MAX_DIMS}", t.ndim));
    }
    let ndim = t.ndim as usize;
    if ndim > 0 && t.shape.is_null() {
        return Err("the shape pointer is null".into());
    }
    let shape: &[i64] = if ndim == 0 {
        &[]
    } else {
        std::slice::from_raw_parts(t.shape, ndim)
    };
    if let Some(d) = shape.iter().find(|d| **d < 0) {
        return Err(format!("shape {shape:?} has a negative dimension {d}"));
    }
    let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize / 8)
        .ok_or_else(|| format!("shape {shape:?} is too large"))?;
    let strides: Vec<i64> = if t.strides.is_null() || ndim == 0 {
        compact_strides(&dims)
    } else {
        std::slice::from_raw_parts(t.strides, ndim).to_vec()
    };
    if let Some(s) = strides.iter().find(|s| **s < 0) {
        return Err(format!(
            "strides {strides:?} have a negative stride {s}; weft reads forward strides only"
        ));
    }
    if count == 0 {
        return Tensor::zeros(dims, dtype, &Device::Cpu).map_err(|e| e.to_string());
    }
    if t.data.is_null() {
        return Err(format!("the data pointer is null for shape {shape:?}"));
    }
    let elem = dtype.size_in_bytes();
    let base = (t.data as *const u8).wrapping_add(t.byte_offset as usize);
    if (base as usize) & (elem - 1) != 0 {
        return Err(format!(
            "data + byte_offset is not aligned to {elem}-byte elements"
        ));
    }
    // The furthest element must be addressable without overflow.
    dims.iter()
        .zip(&strides)
        .try_fold(0u64, |acc, (&d, &s)| {
            (d as u64 - 1)
                .checked_mul(s as u64)
                .and_then(|x| acc.checked_add(x))
        })
        .filter(|&last| last <= (isize::MAX as u64) / elem as u64)
        .ok_or_else(|| format!("strides {strides:?} reach beyond addressable memory"))?;
    macro_rules! gather {
        ($ty:ty) => {{
            let base = base as *const $ty;
            let mut out: Vec<$ty> = Vec::with_capacity(count);
            if strides == compact_strides(&dims) {
                out.extend_from_slice(std::slice::from_raw_parts(base, count));
            } else {
                let mut index = vec![0usize; ndim];
                for _ in 0..count {
                    let offset: usize = index
                        .iter()
                        .zip(&strides)
                        .map(|(i, s)| i * *s as usize)
                        .sum();
                    out.push(*base.add(offset));
                    for axis in (0..ndim).rev() {
                        index[axis] += 1;
                        if index[axis] < dims[axis] {
                            break;
                        }
                        index[axis] = 0;
                    }
                }
            }
            Tensor::from_vec(out, dims, &Device::Cpu)
        }};
    }
    let tensor = match dtype {
        DType::U8 => gather!(u8),
        DType::U32 => gather!(u32),
        DType::I64 => gather!(i64),
        DType::F32 => gather!(f32),
        _ => gather!(f64),
    };
    tensor.map_err(|e| e.to_string())
}

fn compact_strides(dims: &[usize]) -> Vec<i64> {
    let mut strides = vec![1i64; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * dims[i + 1] as i64;
    }
    strides
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_then_import_round_trips_views_without_copying_on_export() {
        let base = Tensor::arange(0f32, 24., &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 4))
            .unwrap();
        // A strided, offset view: transposed and narrowed.
        let view = base.transpose(1, 2).unwrap().narrow(1, 1, 2).unwrap();
        let managed = export(&view).unwrap();
        unsafe {
            let t = &(*managed).dl_tensor;
            let (storage, _) = base.storage_and_layout();
            let Storage::Cpu(CpuStorage::F32(v)) = &*storage else {
                panic!("cpu f32")
            };
            assert_eq!(t.data as *const f32, v.as_ptr(), "export shares storage");
            assert_eq!(t.byte_offset, 4);
        }
        let back = unsafe { import_owned(managed) }.unwrap();
        assert_eq!(
            back.to_vec3::<f32>().unwrap(),
            view.to_vec3::<f32>().unwrap()
        );
    }

    fn managed(
        data: *mut c_void,
        dtype: DLDataType,
        shape: &mut [i64],
        strides: Option<&mut [i64]>,
    ) -> DLManagedTensorVersioned {
        DLManagedTensorVersioned {
            version: DLPackVersion { major: 1, minor: 0 },
            manager_ctx: std::ptr::null_mut(),
            deleter: None,
            flags: 0,
            dl_tensor: DLTensor {
                data,
                device: DLDevice {
                    device_type: DL_CPU,
                    device_id: 0,
                },
                ndim: shape.len() as i32,
                dtype,
                shape: shape.as_mut_ptr(),
                strides: strides.map_or(std::ptr::null_mut(), |s| s.as_mut_ptr()),
                byte_offset: 0,
            },
        }
    }

    #[test]
    fn malformed_tensors_are_refused_with_the_reason() {
        let mut data = [0f32; 6];
        let ptr = data.as_mut_ptr().cast();
        let mut shape = [2i64, 3];
        let half = DLDataType {
            code: DL_FLOAT,
            bits: 16,
            lanes: 1,
        };
        let cases: Vec<(DLManagedTensorVersioned, &str)> = vec![
            (managed(ptr, half, &mut shape, None), "dtype"),
            (
                managed(std::ptr::null_mut(), DLDataType::F32, &mut shape, None),
                "data pointer is null",
            ),
            (
                managed(ptr, DLDataType::F32, &mut shape, Some(&mut [-3, 1])),
                "negative stride",
            ),
            (
                managed(ptr, DLDataType::F32, &mut [2, -3], None),
                "negative dimension",
            ),
        ];
        for (m, expected) in cases {
            let err = unsafe { import_borrowed(&m) }.unwrap_err();
            assert!(err.contains(expected), "{err} should mention {expected}");
        }
        let mut gpu = managed(ptr, DLDataType::F32, &mut shape, None);
        gpu.dl_tensor.device.device_type = 2;
        assert!(unsafe { import_borrowed(&gpu) }
            .unwrap_err()
            .contains("not the CPU"));
        assert!(unsafe { import_borrowed(std::ptr::null()) }
            .unwrap_err()
            .contains("null"));
    }

    #[test]
    fn zero_strides_broadcast() {
        let mut data = [1f32, 2., 3.];
        let mut shape = [2i64, 3];
        let m = managed(
            data.as_mut_ptr().cast(),
            DLDataType::F32,
            &mut shape,
            Some(&mut [0, 1]),
        );
        let t = unsafe { import_borrowed(&m) }.unwrap();
        assert_eq!(
            t.to_vec2::<f32>().unwrap(),
            vec![vec![1., 2., 3.], vec![1., 2., 3.]]
        );
    }
}

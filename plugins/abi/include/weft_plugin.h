/* weft plugin ABI 1.1 (1.0 plus appended fields: 1.0 plugins keep working). The C mirror of the weft-plugin-abi crate
 * (plugins/abi/src/lib.rs), which documents every field and the ownership
 * rules. A plugin exports one function:
 *
 *   const WeftPluginInfo *weft_plugin_entry(const WeftHostApi *host);
 */
#ifndef WEFT_PLUGIN_H
#define WEFT_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#define WEFT_ABI_MAJOR 1u
#define WEFT_ABI_MINOR 1u
#define WEFT_STATUS_OK 0
#define WEFT_STATUS_ERROR 1

typedef struct WeftStr { const char *ptr; size_t len; } WeftStr;

/* ---- DLPack 1.x (the subset weft uses, layout-identical to dlpack.h) ---- */
#ifndef DLPACK_VERSION_MAJOR
typedef struct { uint32_t major; uint32_t minor; } DLPackVersion;
typedef struct { int32_t device_type; int32_t device_id; } DLDevice;
typedef struct { uint8_t code; uint8_t bits; uint16_t lanes; } DLDataType;
typedef struct {
  void *data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t *shape;
  int64_t *strides; /* in elements; NULL = compact row-major */
  uint64_t byte_offset;
} DLTensor;
typedef struct DLManagedTensorVersioned {
  DLPackVersion version;
  void *manager_ctx;
  void (*deleter)(struct DLManagedTensorVersioned *self);
  uint64_t flags;
  DLTensor dl_tensor;
} DLManagedTensorVersioned;
#endif
#define WEFT_DLPACK_MAJOR 1u
#define WEFT_DLPACK_MINOR 0u
#define WEFT_DL_CPU 1
#define WEFT_DL_INT 0
#define WEFT_DL_UINT 1
#define WEFT_DL_FLOAT 2
#define WEFT_DL_BFLOAT 4
#define WEFT_DLPACK_FLAG_READ_ONLY 1u

/* ---- values ---- */
enum {
  WEFT_VALUE_NONE = 0,
  WEFT_VALUE_INT = 1,
  WEFT_VALUE_FLOAT = 2,
  WEFT_VALUE_BOOL = 3,
  WEFT_VALUE_STRING = 4,
  WEFT_VALUE_TENSOR = 5, /* IMAGE, MASK, SIGMAS, LATENT (space in .string) */
  WEFT_VALUE_HANDLE = 6, /* a host object */
  WEFT_VALUE_OBJECT = 7  /* a plugin object (GUIDER or SAMPLER) */
};

typedef struct WeftHandle WeftHandle; /* opaque */
typedef struct WeftCall WeftCall;     /* opaque */
typedef int32_t WeftStatus;

struct WeftObjectVTable;
typedef struct WeftObject {
  void *data;
  const struct WeftObjectVTable *vtable;
} WeftObject;

typedef struct WeftValue {
  uint32_t tag;
  uint32_t reserved;
  int64_t int_value;
  double float_value;
  WeftStr string;
  DLManagedTensorVersioned *tensor;
  const WeftHandle *handle;
  WeftObject object;
} WeftValue;

#define WEFT_PATH_DIFFUSION 0u
#define WEFT_PATH_FLOW 1u

typedef struct WeftObjectVTable {
  uint32_t size;
  void (*release)(void *data);
  WeftStatus (*denoise)(void *data, const WeftCall *call,
                        const DLManagedTensorVersioned *x, double sigma,
                        DLManagedTensorVersioned **out);
  uint32_t (*path)(void *data);
  WeftStatus (*sample)(void *data, const WeftCall *call,
                       const WeftHandle *denoiser,
                       const DLManagedTensorVersioned *x, const double *sigmas,
                       size_t n_sigmas, DLManagedTensorVersioned **out);
  /* 1.1: a denoiser wrapper (model_wrap): D(x, sigma) for `cond`, given
   * the wrapped model `inner` (valid during the call; use model_denoise). */
  WeftStatus (*wrap_denoise)(void *data, const WeftCall *call,
                             const WeftHandle *inner,
                             const DLManagedTensorVersioned *x, double sigma,
                             const WeftHandle *cond,
                             DLManagedTensorVersioned **out);
  /* 1.1: an attention hook (model_attention_hook): the attention of layer
   * `name` before the output projection; leave *out NULL to keep weft's. */
  WeftStatus (*attend)(void *data, const WeftCall *call, WeftStr name,
                       const DLManagedTensorVersioned *q,
                       const DLManagedTensorVersioned *k,
                       const DLManagedTensorVersioned *v, uint32_t heads,
                       DLManagedTensorVersioned **out);
} WeftObjectVTable;

/* ---- schemas ---- */
#define WEFT_INPUT_REQUIRED 1u
#define WEFT_INPUT_HAS_MIN 2u
#define WEFT_INPUT_HAS_MAX 4u
#define WEFT_INPUT_HAS_STEP 8u

typedef struct WeftInputSpec {
  WeftStr name;
  WeftStr type_name; /* "INT", "FLOAT", "IMAGE", "GUIDER", ... */
  uint32_t flags;
  WeftValue default_value;
  double min, max, step;
  const WeftStr *choices;
  size_t n_choices;
  WeftStr doc;
} WeftInputSpec;

typedef struct WeftOutputSpec {
  WeftStr name;
  WeftStr type_name;
  WeftStr doc;
} WeftOutputSpec;

#define WEFT_NODE_OUTPUT 1u
#define WEFT_NODE_NONDETERMINISTIC 2u
#define WEFT_NODE_HEAVY 4u

typedef WeftStatus (*WeftRunFn)(void *node_data, const WeftCall *call,
                                const WeftValue *inputs, size_t n_inputs,
                                WeftValue *outputs, size_t n_outputs);

typedef struct WeftNodeType {
  WeftStr type_name;
  WeftStr category;
  WeftStr doc;
  const WeftInputSpec *inputs;
  size_t n_inputs;
  const WeftOutputSpec *outputs;
  size_t n_outputs;
  uint32_t flags;
  void *node_data;
  WeftRunFn run;
} WeftNodeType;

typedef struct WeftPluginInfo {
  uint32_t abi_major;
  uint32_t abi_minor;
  uint32_t size; /* sizeof(WeftPluginInfo) */
  WeftStr name;
  WeftStr version;
  const WeftNodeType *nodes;
  size_t n_nodes;
} WeftPluginInfo;

/* ---- host API ---- */
#define WEFT_LOG_INFO 0u
#define WEFT_LOG_WARN 1u

typedef struct WeftHostApi {
  uint32_t abi_major;
  uint32_t abi_minor;
  uint32_t size; /* sizeof(WeftHostApi) */
  void (*set_error)(const WeftCall *call, WeftStr message);
  void (*log)(const WeftCall *call, uint32_t level, WeftStr message);
  void (*progress)(const WeftCall *call, uint64_t done, uint64_t total);
  int32_t (*is_cancelled)(const WeftCall *call);
  uint32_t (*threads)(const WeftCall *call);
  DLManagedTensorVersioned *(*alloc_tensor)(DLDataType dtype, int32_t ndim,
                                            const int64_t *shape);
  void (*handle_retain)(const WeftHandle *handle);
  void (*handle_release)(const WeftHandle *handle);
  WeftStr (*handle_type)(const WeftHandle *handle);
  WeftStatus (*denoise)(const WeftCall *call, const WeftHandle *denoiser,
                        const DLManagedTensorVersioned *x, double sigma,
                        DLManagedTensorVersioned **out);
  uint32_t (*denoiser_path)(const WeftHandle *denoiser);
  WeftStatus (*step_noise)(const WeftCall *call,
                           const DLManagedTensorVersioned *like,
                           DLManagedTensorVersioned **out);

  /* ---- 1.1: CONDITIONING views. Every edit returns a new handle the
   * plugin owns; nothing is changed in place. Keys: context, pooled,
   * labels, mask, concat_latent, concat_mask (tensors); strength, guidance,
   * start_percent, end_percent (floats); area ("cells H W TOP LEFT" or
   * "fraction H W TOP LEFT"). Check host->abi_minor >= 1 first. ---- */
  size_t (*cond_len)(const WeftHandle *cond);
  WeftStatus (*cond_get)(const WeftCall *call, const WeftHandle *cond,
                         size_t index, WeftStr key, WeftValue *out);
  WeftStatus (*cond_set)(const WeftCall *call, const WeftHandle *cond,
                         size_t index, WeftStr key, const WeftValue *value,
                         const WeftHandle **out);
  WeftStatus (*cond_entry)(const WeftCall *call, const WeftHandle *cond,
                           size_t index, const WeftHandle **out);
  WeftStatus (*cond_combine)(const WeftCall *call, const WeftHandle *a,
                             const WeftHandle *b, const WeftHandle **out);
  WeftStatus (*cond_new)(const WeftCall *call,
                         const DLManagedTensorVersioned *context,
                         const DLManagedTensorVersioned *pooled,
                         const WeftHandle **out);

  /* ---- 1.1: MODEL patches, each returning a new MODEL handle. ---- */
  WeftStatus (*model_wrap)(const WeftCall *call, const WeftHandle *model,
                           WeftObject wrapper, const WeftHandle **out);
  WeftStatus (*model_denoise)(const WeftCall *call, const WeftHandle *model,
                              const DLManagedTensorVersioned *x, double sigma,
                              const WeftHandle *cond,
                              DLManagedTensorVersioned **out);
  WeftStatus (*model_add_deltas)(const WeftCall *call,
                                 const WeftHandle *model, const WeftStr *names,
                                 const DLManagedTensorVersioned *const *deltas,
                                 size_t n, double strength,
                                 const WeftHandle **out);
  WeftStatus (*model_attention_hook)(const WeftCall *call,
                                     const WeftHandle *model, WeftObject hook,
                                     const WeftHandle **out);
} WeftHostApi;

/* A WeftStr from a string literal, as an expression ... */
#define WEFT_STR(literal) ((WeftStr){literal, sizeof(literal) - 1})
/* ... and as a static initializer (strict C and MSVC). */
#define WEFT_STR_INIT(literal) {literal, sizeof(literal) - 1}

#if defined(_WIN32)
#define WEFT_EXPORT __declspec(dllexport)
#else
#define WEFT_EXPORT __attribute__((visibility("default")))
#endif

/* The one symbol a plugin exports. Returns NULL to refuse the host. */
WEFT_EXPORT const WeftPluginInfo *weft_plugin_entry(const WeftHostApi *host);

#endif /* WEFT_PLUGIN_H */

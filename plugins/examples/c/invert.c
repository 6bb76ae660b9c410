/* A weft plugin in plain C99: one node, InvertImage, out = 1 - image.
 * It exists to show that the plugin ABI needs nothing from Rust: only
 * weft_plugin.h, DLPack tensors and the host's function table.
 *
 *   cc -std=c99 -shared -fPIC -I plugins/abi/include \
 *      plugins/examples/c/invert.c -o libinvert.so
 */
#include "weft_plugin.h"

/* The value the image is inverted around; a build-time knob so a test can
 * rebuild the library with another value and watch weft reload it. */
#ifndef INVERT_ONE
#define INVERT_ONE 1.0f
#endif

/* DLPack caps the dimensions weft hands over; more would be malformed. */
#define MAX_DIMS 16

/* The host table from the entry call; valid while the library is loaded. */
static const WeftHostApi *host;

static WeftStatus fail(const WeftCall *call, WeftStr message) {
  host->set_error(call, message);
  return WEFT_STATUS_ERROR;
}

/* Reads the input as it is laid out (strides, offset), writes a compact
 * output: the host may hand over views without copying them first. */
static WeftStatus run_invert(void *node_data, const WeftCall *call,
                             const WeftValue *inputs, size_t n_inputs,
                             WeftValue *outputs, size_t n_outputs) {
  const DLTensor *in;
  DLManagedTensorVersioned *out;
  int64_t compact[MAX_DIMS];
  int64_t index[MAX_DIMS];
  const int64_t *strides;
  const float *src;
  float *dst;
  float amount = 1.0f;
  int64_t count = 1;
  int64_t e;
  int32_t k;
  (void)node_data;

  if (n_inputs != 2 || n_outputs != 1)
    return fail(call, WEFT_STR("InvertImage: called with the wrong arity"));
  if (inputs[0].tag != WEFT_VALUE_TENSOR || inputs[0].tensor == NULL)
    return fail(call, WEFT_STR("InvertImage: `image` is not a tensor"));
  if (inputs[1].tag == WEFT_VALUE_FLOAT)
    amount = (float)inputs[1].float_value;
  else if (inputs[1].tag == WEFT_VALUE_INT)
    amount = (float)inputs[1].int_value;

  in = &inputs[0].tensor->dl_tensor;
  if (in->device.device_type != WEFT_DL_CPU)
    return fail(call, WEFT_STR("InvertImage: the image is not on the CPU"));
  if (in->dtype.code != WEFT_DL_FLOAT || in->dtype.bits != 32 ||
      in->dtype.lanes != 1)
    return fail(call, WEFT_STR("InvertImage: the image is not f32"));
  if (in->ndim < 0 || in->ndim > MAX_DIMS ||
      (in->ndim > 0 && in->shape == NULL))
    return fail(call, WEFT_STR("InvertImage: the image's shape is malformed"));
  for (k = in->ndim - 1; k >= 0; k--) {
    if (in->shape[k] < 0)
      return fail(call, WEFT_STR("InvertImage: negative dimension"));
    compact[k] = count;
    count *= in->shape[k];
    index[k] = 0;
  }
  if (count > 0 && in->data == NULL)
    return fail(call, WEFT_STR("InvertImage: the image's data is null"));

  out = host->alloc_tensor(in->dtype, in->ndim, in->shape);
  if (out == NULL || (count > 0 && out->dl_tensor.data == NULL))
    return fail(call, WEFT_STR("InvertImage: the host could not allocate"));

  /* NULL strides mean compact row-major; strides count elements, not bytes. */
  strides = in->strides != NULL ? in->strides : compact;
  src = (const float *)(const void *)((const char *)in->data + in->byte_offset);
  dst = (float *)(void *)((char *)out->dl_tensor.data +
                          out->dl_tensor.byte_offset);
  for (e = 0; e < count; e++) {
    int64_t offset = 0;
    float x;
    for (k = 0; k < in->ndim; k++)
      offset += index[k] * strides[k];
    x = src[offset];
    dst[e] = amount * (INVERT_ONE - x) + (1.0f - amount) * x;
    /* Advance the multi-index, last axis fastest. */
    for (k = in->ndim - 1; k >= 0; k--) {
      if (++index[k] < in->shape[k])
        break;
      index[k] = 0;
    }
  }

  {
    static const WeftValue none;
    outputs[0] = none;
  }
  outputs[0].tag = WEFT_VALUE_TENSOR;
  outputs[0].tensor = out;
  return WEFT_STATUS_OK;
}

static const WeftInputSpec invert_inputs[] = {
    {
        .name = WEFT_STR_INIT("image"),
        .type_name = WEFT_STR_INIT("IMAGE"),
        .flags = WEFT_INPUT_REQUIRED,
        .doc = WEFT_STR_INIT("the image to invert, [b, c, h, w] in [0, 1]"),
    },
    {
        .name = WEFT_STR_INIT("amount"),
        .type_name = WEFT_STR_INIT("FLOAT"),
        .flags = WEFT_INPUT_HAS_MIN | WEFT_INPUT_HAS_MAX,
        .default_value = {.tag = WEFT_VALUE_FLOAT, .float_value = 1.0},
        .min = 0.0,
        .max = 1.0,
        .doc = WEFT_STR_INIT("blend between the image (0) and its inverse (1)"),
    },
};

static const WeftOutputSpec invert_outputs[] = {
    {
        .name = WEFT_STR_INIT("IMAGE"),
        .type_name = WEFT_STR_INIT("IMAGE"),
        .doc = WEFT_STR_INIT("the inverted image"),
    },
};

static const WeftNodeType nodes[] = {
    {
        .type_name = WEFT_STR_INIT("InvertImage"),
        .category = WEFT_STR_INIT("image"),
        .doc = WEFT_STR_INIT("1 − image, in C: proves the ABI is language-neutral."),
        .inputs = invert_inputs,
        .n_inputs = sizeof invert_inputs / sizeof invert_inputs[0],
        .outputs = invert_outputs,
        .n_outputs = sizeof invert_outputs / sizeof invert_outputs[0],
        .flags = 0,
        .node_data = NULL,
        .run = run_invert,
    },
};

static const WeftPluginInfo info = {
    .abi_major = WEFT_ABI_MAJOR,
    .abi_minor = WEFT_ABI_MINOR,
    .size = sizeof(WeftPluginInfo),
    .name = WEFT_STR_INIT("invert-c"),
    .version = WEFT_STR_INIT("0.1.0"),
    .nodes = nodes,
    .n_nodes = sizeof nodes / sizeof nodes[0],
};

/* Refuses a host of another major version, or one whose table is shorter
 * than the fields this plugin calls. */
const WeftPluginInfo *weft_plugin_entry(const WeftHostApi *host_api) {
  if (host_api == NULL || host_api->abi_major != WEFT_ABI_MAJOR ||
      host_api->size < sizeof(WeftHostApi))
    return NULL;
  host = host_api;
  return &info;
}

/* A conditioning plugin in plain C99 (plugin ABI 1.1): one node,
 * ExampleConditioningScale, which multiplies the text states (`context`)
 * and pooled states of every entry of a CONDITIONING by `factor`, through
 * the host's CONDITIONING view. Options and attachments (areas, timestep
 * ranges, ControlNet hints) are kept: each edit returns a new handle.
 *
 *   cc -std=c99 -shared -fPIC -I plugins/abi/include \
 *      plugins/examples/c/conditioning_scale.c -o libconditioning_scale.so
 */
#include "weft_plugin.h"

#define MAX_DIMS 16

static const WeftHostApi *host;

static WeftStatus fail(const WeftCall *call, WeftStr message) {
  host->set_error(call, message);
  return WEFT_STATUS_ERROR;
}

/* A compact copy of `in` (f32, any strides) times `factor`, or NULL. */
static DLManagedTensorVersioned *scaled(const DLTensor *in, float factor) {
  int64_t compact[MAX_DIMS], index[MAX_DIMS], count = 1, e;
  const int64_t *strides;
  const float *src;
  float *dst;
  DLManagedTensorVersioned *out;
  int32_t k;
  if (in->dtype.code != WEFT_DL_FLOAT || in->dtype.bits != 32 ||
      in->dtype.lanes != 1 || in->ndim < 0 || in->ndim > MAX_DIMS ||
      (in->ndim > 0 && in->shape == NULL))
    return NULL;
  for (k = in->ndim - 1; k >= 0; k--) {
    if (in->shape[k] < 0)
      return NULL;
    compact[k] = count;
    count *= in->shape[k];
    index[k] = 0;
  }
  out = host->alloc_tensor(in->dtype, in->ndim, in->shape);
  if (out == NULL || (count > 0 && (out->dl_tensor.data == NULL || in->data == NULL)))
    return NULL;
  strides = in->strides != NULL ? in->strides : compact;
  src = (const float *)(const void *)((const char *)in->data + in->byte_offset);
  dst = (float *)(void *)((char *)out->dl_tensor.data + out->dl_tensor.byte_offset);
  for (e = 0; e < count; e++) {
    int64_t offset = 0;
    for (k = 0; k < in->ndim; k++)
      offset += index[k] * strides[k];
    dst[e] = factor * src[offset];
    for (k = in->ndim - 1; k >= 0; k--) {
      if (++index[k] < in->shape[k])
        break;
      index[k] = 0;
    }
  }
  return out;
}

static void delete_tensor(DLManagedTensorVersioned *t) {
  if (t != NULL && t->deleter != NULL)
    t->deleter(t);
}

/* `*cond` with field `key` of entry `i` scaled; the old handle is released
 * (unless it is the input, which the host owns). */
static WeftStatus scale_field(const WeftCall *call, const WeftHandle **cond,
                              const WeftHandle *input, size_t i, WeftStr key,
                              float factor) {
  WeftValue got, set;
  const WeftHandle *next = NULL;
  DLManagedTensorVersioned *product;
  static const WeftValue none;
  WeftStatus status = host->cond_get(call, *cond, i, key, &got);
  if (status != WEFT_STATUS_OK)
    return status;
  if (got.tag != WEFT_VALUE_TENSOR)
    return WEFT_STATUS_OK; /* the entry has no such tensor */
  product = scaled(&got.tensor->dl_tensor, factor);
  delete_tensor(got.tensor);
  if (product == NULL)
    return fail(call, WEFT_STR("ExampleConditioningScale: not an f32 tensor, or no memory"));
  set = none;
  set.tag = WEFT_VALUE_TENSOR;
  set.tensor = product;
  status = host->cond_set(call, *cond, i, key, &set, &next);
  delete_tensor(product);
  if (status != WEFT_STATUS_OK)
    return status;
  if (*cond != input)
    host->handle_release(*cond);
  *cond = next;
  return WEFT_STATUS_OK;
}

static WeftStatus run_scale(void *node_data, const WeftCall *call,
                            const WeftValue *inputs, size_t n_inputs,
                            WeftValue *outputs, size_t n_outputs) {
  static const WeftValue none;
  const WeftHandle *input, *cond;
  float factor = 1.0f;
  size_t i, n;
  (void)node_data;
  if (n_inputs != 2 || n_outputs != 1)
    return fail(call, WEFT_STR("ExampleConditioningScale: wrong arity"));
  if (inputs[0].tag != WEFT_VALUE_HANDLE || inputs[0].handle == NULL)
    return fail(call, WEFT_STR("ExampleConditioningScale: `conditioning` is not a handle"));
  if (inputs[1].tag == WEFT_VALUE_FLOAT)
    factor = (float)inputs[1].float_value;
  else if (inputs[1].tag == WEFT_VALUE_INT)
    factor = (float)inputs[1].int_value;
  input = cond = inputs[0].handle;
  n = host->cond_len(input);
  if (n == 0)
    return fail(call, WEFT_STR("ExampleConditioningScale: not a CONDITIONING"));
  for (i = 0; i < n; i++) {
    if (scale_field(call, &cond, input, i, WEFT_STR("context"), factor) != WEFT_STATUS_OK ||
        scale_field(call, &cond, input, i, WEFT_STR("pooled"), factor) != WEFT_STATUS_OK) {
      if (cond != input)
        host->handle_release(cond);
      return WEFT_STATUS_ERROR;
    }
  }
  /* Returning the input itself would hand over a reference we do not own. */
  if (cond == input)
    host->handle_retain(cond);
  outputs[0] = none;
  outputs[0].tag = WEFT_VALUE_HANDLE;
  outputs[0].handle = cond;
  return WEFT_STATUS_OK;
}

static const WeftInputSpec scale_inputs[] = {
    {
        .name = WEFT_STR_INIT("conditioning"),
        .type_name = WEFT_STR_INIT("CONDITIONING"),
        .flags = WEFT_INPUT_REQUIRED,
        .doc = WEFT_STR_INIT("the conditioning to scale"),
    },
    {
        .name = WEFT_STR_INIT("factor"),
        .type_name = WEFT_STR_INIT("FLOAT"),
        .flags = WEFT_INPUT_HAS_MIN | WEFT_INPUT_HAS_MAX,
        .default_value = {.tag = WEFT_VALUE_FLOAT, .float_value = 1.0},
        .min = -10.0,
        .max = 10.0,
        .doc = WEFT_STR_INIT("what the text and pooled states are multiplied by"),
    },
};

static const WeftOutputSpec scale_outputs[] = {
    {
        .name = WEFT_STR_INIT("CONDITIONING"),
        .type_name = WEFT_STR_INIT("CONDITIONING"),
        .doc = WEFT_STR_INIT("the scaled conditioning"),
    },
};

static const WeftNodeType nodes[] = {
    {
        .type_name = WEFT_STR_INIT("ExampleConditioningScale"),
        .category = WEFT_STR_INIT("plugins/conditioning"),
        .doc = WEFT_STR_INIT("Every entry's text and pooled states times `factor`, in C through the CONDITIONING view."),
        .inputs = scale_inputs,
        .n_inputs = sizeof scale_inputs / sizeof scale_inputs[0],
        .outputs = scale_outputs,
        .n_outputs = sizeof scale_outputs / sizeof scale_outputs[0],
        .flags = 0,
        .node_data = NULL,
        .run = run_scale,
    },
};

static const WeftPluginInfo info = {
    .abi_major = WEFT_ABI_MAJOR,
    .abi_minor = WEFT_ABI_MINOR,
    .size = sizeof(WeftPluginInfo),
    .name = WEFT_STR_INIT("conditioning-scale-c"),
    .version = WEFT_STR_INIT("0.1.0"),
    .nodes = nodes,
    .n_nodes = sizeof nodes / sizeof nodes[0],
};

/* Needs the 1.1 table: refuses a host that is older or of another major. */
const WeftPluginInfo *weft_plugin_entry(const WeftHostApi *host_api) {
  if (host_api == NULL || host_api->abi_major != WEFT_ABI_MAJOR ||
      host_api->abi_minor < 1 || host_api->size < sizeof(WeftHostApi))
    return NULL;
  host = host_api;
  return &info;
}

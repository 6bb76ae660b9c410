/* A deliberately broken weft plugin for the host's error tests.
 *
 * BadTensor returns a malformed IMAGE chosen by `kind`; DeletedCount reports
 * how many of those tensors the host has deleted, so a test can check that
 * rejected tensors are still given back to their producer.
 *
 * Build variants:
 *   -DWEFT_TEST_ABI_MAJOR=99  the plugin claims ABI major 99 (the host must refuse it)
 *   -DWEFT_TEST_NO_ENTRY      the entry point has the wrong name (no entry symbol)
 *   -DWEFT_TEST_BAD_TYPE      DeletedCount declares a type weft does not have
 */
#include <stdlib.h>
#include <string.h>

#include "weft_plugin.h"

#ifdef WEFT_TEST_ABI_MAJOR
#define INFO_ABI_MAJOR WEFT_TEST_ABI_MAJOR
#else
#define INFO_ABI_MAJOR WEFT_ABI_MAJOR
#endif

#ifdef WEFT_TEST_NO_ENTRY
#define ENTRY_NAME not_the_entry
#else
#define ENTRY_NAME weft_plugin_entry
#endif

static const WeftHostApi *host;

/* Deleters may run on any host thread, so the count is atomic where the
 * compiler offers it. */
static long deleted;

static void count_deletion(void) {
#if defined(__GNUC__) || defined(__clang__)
  __atomic_fetch_add(&deleted, 1, __ATOMIC_SEQ_CST);
#else
  deleted++;
#endif
}

static long deletions(void) {
#if defined(__GNUC__) || defined(__clang__)
  return __atomic_load_n(&deleted, __ATOMIC_SEQ_CST);
#else
  return deleted;
#endif
}

/* One malformed tensor and everything it points to; `managed` comes first
 * so the deleter can free the whole block from the DLPack pointer. */
typedef struct Bad {
  DLManagedTensorVersioned managed;
  int64_t shape[4];
  int64_t strides[4];
} Bad;

static void delete_bad(DLManagedTensorVersioned *self) {
  Bad *bad = (Bad *)(void *)self;
  if (bad == NULL)
    return;
  free(bad->managed.dl_tensor.data);
  free(bad);
  count_deletion();
}

/* A well-formed [1, 1, 2, 2] f32 tensor, which the caller then breaks. */
static Bad *new_bad(void) {
  Bad *bad = (Bad *)calloc(1, sizeof(Bad));
  if (bad == NULL)
    return NULL;
  bad->managed.version.major = 1;
  bad->managed.version.minor = 0;
  bad->managed.manager_ctx = NULL;
  bad->managed.deleter = delete_bad;
  bad->managed.flags = 0;
  bad->shape[0] = 1;
  bad->shape[1] = 1;
  bad->shape[2] = 2;
  bad->shape[3] = 2;
  /* Compact strides, used only once a case points `strides` at them. */
  bad->strides[0] = 4;
  bad->strides[1] = 4;
  bad->strides[2] = 2;
  bad->strides[3] = 1;
  bad->managed.dl_tensor.data = calloc(4, sizeof(float));
  bad->managed.dl_tensor.device.device_type = WEFT_DL_CPU;
  bad->managed.dl_tensor.device.device_id = 0;
  bad->managed.dl_tensor.ndim = 4;
  bad->managed.dl_tensor.dtype.code = WEFT_DL_FLOAT;
  bad->managed.dl_tensor.dtype.bits = 32;
  bad->managed.dl_tensor.dtype.lanes = 1;
  bad->managed.dl_tensor.shape = bad->shape;
  bad->managed.dl_tensor.strides = NULL;
  bad->managed.dl_tensor.byte_offset = 0;
  if (bad->managed.dl_tensor.data == NULL) {
    free(bad);
    return NULL;
  }
  return bad;
}

static int str_is(WeftStr s, const char *text) {
  size_t n = strlen(text);
  return s.len == n && (n == 0 || (s.ptr != NULL && memcmp(s.ptr, text, n) == 0));
}

static WeftStatus run_bad_tensor(void *node_data, const WeftCall *call,
                                 const WeftValue *inputs, size_t n_inputs,
                                 WeftValue *outputs, size_t n_outputs) {
  static const WeftValue none;
  WeftStr kind = WEFT_STR_INIT("null_data");
  Bad *bad;
  (void)node_data;
  if (n_inputs != 1 || n_outputs != 1) {
    host->set_error(call, WEFT_STR("BadTensor: called with the wrong arity"));
    return WEFT_STATUS_ERROR;
  }
  if (inputs[0].tag == WEFT_VALUE_STRING)
    kind = inputs[0].string;
  outputs[0] = none;
  outputs[0].tag = WEFT_VALUE_TENSOR;
  if (str_is(kind, "null_tensor")) {
    outputs[0].tensor = NULL;
    return WEFT_STATUS_OK;
  }
  if (!str_is(kind, "null_data") && !str_is(kind, "bad_dtype") &&
      !str_is(kind, "bad_strides")) {
    outputs[0] = none;
    host->set_error(call, WEFT_STR("BadTensor: unknown kind"));
    return WEFT_STATUS_ERROR;
  }
  bad = new_bad();
  if (bad == NULL) {
    outputs[0] = none;
    host->set_error(call, WEFT_STR("BadTensor: out of memory"));
    return WEFT_STATUS_ERROR;
  }
  if (str_is(kind, "null_data")) {
    free(bad->managed.dl_tensor.data);
    bad->managed.dl_tensor.data = NULL;
  } else if (str_is(kind, "bad_dtype")) {
    /* float16: weft exchanges f32/f64/i64/u32/u8 only. */
    bad->managed.dl_tensor.dtype.code = WEFT_DL_FLOAT;
    bad->managed.dl_tensor.dtype.bits = 16;
  } else {
    /* A negative stride; on a size-1 axis it stays inside the buffer, so
     * only the host's validation can object to it. */
    bad->strides[0] = -4;
    bad->managed.dl_tensor.strides = bad->strides;
  }
  outputs[0].tensor = &bad->managed;
  return WEFT_STATUS_OK;
}

static WeftStatus run_deleted_count(void *node_data, const WeftCall *call,
                                    const WeftValue *inputs, size_t n_inputs,
                                    WeftValue *outputs, size_t n_outputs) {
  static const WeftValue none;
  (void)node_data;
  (void)inputs;
  if (n_inputs != 0 || n_outputs != 1) {
    host->set_error(call, WEFT_STR("DeletedCount: called with the wrong arity"));
    return WEFT_STATUS_ERROR;
  }
  outputs[0] = none;
  outputs[0].tag = WEFT_VALUE_INT;
  outputs[0].int_value = deletions();
  return WEFT_STATUS_OK;
}

static const WeftStr kinds[] = {
    WEFT_STR_INIT("null_data"),
    WEFT_STR_INIT("bad_dtype"),
    WEFT_STR_INIT("bad_strides"),
    WEFT_STR_INIT("null_tensor"),
};

static const WeftInputSpec bad_tensor_inputs[] = {
    {
        .name = WEFT_STR_INIT("kind"),
        .type_name = WEFT_STR_INIT("STRING"),
        .flags = 0,
        .default_value = {.tag = WEFT_VALUE_STRING, .string = WEFT_STR_INIT("null_data")},
        .choices = kinds,
        .n_choices = sizeof kinds / sizeof kinds[0],
        .doc = WEFT_STR_INIT("how the returned tensor is malformed"),
    },
};

static const WeftOutputSpec image_output[] = {
    {
        .name = WEFT_STR_INIT("IMAGE"),
        .type_name = WEFT_STR_INIT("IMAGE"),
        .doc = WEFT_STR_INIT("a malformed tensor"),
    },
};

static const WeftOutputSpec int_output[] = {
    {
        .name = WEFT_STR_INIT("INT"),
#ifdef WEFT_TEST_BAD_TYPE
        .type_name = WEFT_STR_INIT("INTEGER"),
#else
        .type_name = WEFT_STR_INIT("INT"),
#endif
        .doc = WEFT_STR_INIT("how many BadTensor tensors have been deleted"),
    },
};

static const WeftNodeType nodes[] = {
    {
        .type_name = WEFT_STR_INIT("BadTensor"),
        .category = WEFT_STR_INIT("testing"),
        .doc = WEFT_STR_INIT("Returns a malformed DLPack tensor, to test the host's checks."),
        .inputs = bad_tensor_inputs,
        .n_inputs = sizeof bad_tensor_inputs / sizeof bad_tensor_inputs[0],
        .outputs = image_output,
        .n_outputs = 1,
        .flags = 0,
        .node_data = NULL,
        .run = run_bad_tensor,
    },
    {
        .type_name = WEFT_STR_INIT("DeletedCount"),
        .category = WEFT_STR_INIT("testing"),
        .doc = WEFT_STR_INIT("How many BadTensor tensors the host has deleted so far."),
        .inputs = NULL,
        .n_inputs = 0,
        .outputs = int_output,
        .n_outputs = 1,
        .flags = WEFT_NODE_NONDETERMINISTIC,
        .node_data = NULL,
        .run = run_deleted_count,
    },
};

static const WeftPluginInfo info = {
    .abi_major = INFO_ABI_MAJOR,
    .abi_minor = WEFT_ABI_MINOR,
    .size = sizeof(WeftPluginInfo),
    .name = WEFT_STR_INIT("misbehave"),
    .version = WEFT_STR_INIT("0.1.0"),
    .nodes = nodes,
    .n_nodes = sizeof nodes / sizeof nodes[0],
};

const WeftPluginInfo *ENTRY_NAME(const WeftHostApi *host_api);

const WeftPluginInfo *ENTRY_NAME(const WeftHostApi *host_api) {
  if (host_api == NULL || host_api->abi_major != WEFT_ABI_MAJOR ||
      host_api->size < sizeof(WeftHostApi))
    return NULL;
  host = host_api;
  return &info;
}

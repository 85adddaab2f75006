// trim(): hand the C heap's free pages back to the kernel (glibc's malloc_trim(0)).
// glibc keeps memory freed in the middle of its heap; a long-lived agent whose
// peak (a burst of sync, a compaction) has passed holds it as resident memory.
#define NAPI_VERSION 8
#include <node_api.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

static napi_value Trim(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
#if defined(__GLIBC__)
  // 1 when memory was released, 0 when there was none to release
  napi_get_boolean(env, malloc_trim(0) == 1, &result);
#else
  napi_get_boolean(env, false, &result);
#endif
  return result;
}

static napi_value Supported(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
#if defined(__GLIBC__)
  napi_get_boolean(env, true, &result);
#else
  napi_get_boolean(env, false, &result);
#endif
  return result;
}

static napi_value Init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "trim", NULL, Trim, NULL, NULL, NULL, napi_enumerable, NULL },
    { "supported", NULL, Supported, NULL, NULL, NULL, napi_enumerable, NULL }
  };
  napi_define_properties(env, exports, 2, props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)

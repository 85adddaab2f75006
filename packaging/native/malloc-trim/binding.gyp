{
  "targets": [{
    "target_name": "malloc_trim",
    "sources": ["src/trim.c"],
    "cflags": ["-O2", "-Wall"]
  }]
}

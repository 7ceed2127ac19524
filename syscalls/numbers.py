"""The syscall table's numbers: one place, append-only, never reused.

Like xv6's syscall.h: every request type's msgpack tag is its number here. A
number, once released, keeps its meaning forever; a retired call keeps its
number reserved. New calls take the next free number.
"""

import enum


class Sys(enum.IntEnum):
    """Syscall numbers. The wire tag of every request struct."""

    # misc
    NULL = 0
    # process
    ATTACH = 1
    EXIT = 2
    SPAWN = 3
    WAIT = 4
    KILL = 5
    GETPID = 6
    PS = 7
    # device
    DEV_LIST = 8
    DEV_INFO = 9
    # memory
    ALLOC = 10
    FREE = 11
    WRITE = 12
    READ = 13
    SHARE = 14
    # compute
    COMPUTE = 15
    # misc
    YIELD = 16
    STAT = 17
    # memory: paged KV cache and the memory map
    KV_POOL = 18
    KV_ALLOC = 19
    KV_APPEND = 20
    KV_FORK = 21
    KV_FREE = 22
    KV_TABLE = 23
    MEMSTAT = 24
    # scheduling
    SCHED_GET = 25
    SCHED_SET = 26
    # drivers
    DRIVER_LIST = 27
    DRIVER_LOAD = 28
    DRIVER_UNLOAD = 29
    # models
    MODEL_LOAD = 30
    MODEL_FREE = 31
    GENERATE = 32
    LOGPROBS = 33
    MODEL_SAVE = 34
    TRAIN_STEP = 35
    # process
    PROG_LIST = 36
    # memory
    HANDLES = 37
    # models: the model's own tokenizer
    TOKENIZE = 38
    DETOKENIZE = 39
    # models: compression
    MODEL_QUANTIZE = 40
    MODEL_PRUNE = 41
    # process: rights
    RIGHTS_DROP = 42
    # tracing
    TRACE_READ = 43

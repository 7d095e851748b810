"""The memory guard: per-child limits that recycle, stop runaway tasks, and quarantine poison.

Stock Celery is not enough for weeks-long runs: ``worker_max_memory_per_child`` reads the
*peak* RSS (``ru_maxrss``) on Linux, so a child is recycled for a spike it already freed; it is
only checked after a task returns, so a task that balloons mid-run brings the kernel's OOM
killer down on the whole worker; and a task that kills its worker is redelivered forever.

What runs where:

* In each **pool child** (``TaskGuard``): memory before and after every task and the peak in
  between when the task raised the child's high-water mark, merged into per-task-name
  statistics by a reporter thread once a second (so a task pays microseconds, no Redis).
  After a task, above ``WATCHKEEPER_MEMORY_WARN_MB`` it logs, counts and runs
  ``gc.collect()``; above ``WATCHKEEPER_MEMORY_RECYCLE_MB`` it recycles through billiard's own
  path: billiard checks ``max_memory_per_child`` right after it has put the task's result on
  the result queue, and then exits the child with ``EX_RECYCLE`` once the parent has read
  that result, so the result is delivered and the task acked exactly once. That check reads
  ``billiard.pool.mem_rss`` (peak RSS on Linux); in the child the guard replaces it with its
  reading of *current* private memory (``worker_max_memory_per_child`` is set to the recycle
  threshold).
* In the **worker's main process** (``Watchdog`` thread): every
  ``WATCHKEEPER_MEMORY_CHECK_INTERVAL`` it reads each child's RSS (one ``statm`` read); a child
  above ``WATCHKEEPER_MEMORY_HARD_MB`` is stopped with SIGKILL at once. The parent does it, not
  a thread in the child, so a task holding the GIL in C code is stopped too. Billiard then
  reports the job lost, Celery requeues it (``task_acks_late`` + ``task_reject_on_worker_lost``)
  and the pool starts a fresh child. Once a second it publishes the node's memory to Redis.
* **Poison tasks**: every worker loss during a task (this guard's hard stop, SIGKILL, the OOM
  killer) is counted per task id in Redis. A redelivered message whose task has reached
  ``WATCHKEEPER_MAX_WORKER_KILLS`` is dead-lettered and revoked on receipt (acked, never run).

Memory is compared as USS (pages private to the child) where psutil provides it, so the
interpreter and modules shared with the parent after fork do not count against a child. USS
(≈0.2 ms, reads ``smaps``) is only read when RSS (≈10 µs) is above a threshold: USS ≤ RSS.

With the solo or threads pool there is no child to replace: the guard still measures, reports
and warns, and says once at start-up that recycling and the hard stop need the prefork pool.
"""

/*-------------------------------------------------------------------------
 *
 * slots.c
 *		The worker pool in shared memory: the launcher, and one slot per
 *		worker.
 *
 * A slot says which process holds it, whether it is busy, whether the
 * launcher asked it to stop, and the job it runs, which jobq.jobs shows as
 * running and the queue and role limits count.  The launcher's identity
 * and generation live here too: a worker started for a launcher that is
 * gone steps aside.  A spinlock guards it all (but the escalation notes,
 * atomics that a signal handler writes): every critical section is a
 * handful of loads and stores, and nothing in them can raise an error.
 * Latches are set after the spinlock is released.  Other files reach the
 * slots only through the functions below.
 *
 * IDENTIFICATION
 *		src/slots.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

#include "jobq.h"
#include "slots.h"

typedef struct JobqPoolState
{
	slock_t		mutex;
	pid_t		launcher_pid;	/* 0 while there is no launcher */
	int			launcher_pgprocno;	/* for its latch */
	uint32		launcher_generation;
	int			next_wake;		/* round-robin start for wake-ups */
	JobqWorkerSlot workers[JOBQ_MAX_WORKERS];

	/* a job a worker ended by exiting, and why; settled from the journal */
	pg_atomic_uint64 escalated_job[JOBQ_MAX_WORKERS];
	pg_atomic_uint32 escalated_reason[JOBQ_MAX_WORKERS];
} JobqPoolState;

static JobqPoolState *Pool = NULL;

Size
JobqSlotsShmemSize(void)
{
	return MAXALIGN(sizeof(JobqPoolState));
}

/* at the server's start, and again after a crash; under AddinShmemInitLock */
void
JobqSlotsShmemInit(void)
{
	bool		found;

	Pool = ShmemInitStruct("jobq slots", JobqSlotsShmemSize(), &found);
	if (!found)
	{
		memset(Pool, 0, JobqSlotsShmemSize());
		SpinLockInit(&Pool->mutex);
		for (int i = 0; i < JOBQ_MAX_WORKERS; i++)
		{
			pg_atomic_init_u64(&Pool->escalated_job[i], 0);
			pg_atomic_init_u32(&Pool->escalated_reason[i], 0);
		}
	}
}

/*
 * Copy every slot into out[JOBQ_MAX_WORKERS]; false if there is no pool
 * (jobq is not preloaded).
 */
bool
JobqSlotsSnapshot(JobqWorkerSlot *out)
{
	if (Pool == NULL)
		return false;
	SpinLockAcquire(&Pool->mutex);
	memcpy(out, Pool->workers, sizeof(JobqWorkerSlot) * JOBQ_MAX_WORKERS);
	SpinLockRelease(&Pool->mutex);
	return true;
}

/* Which slots no process holds, into free_slot[JOBQ_MAX_WORKERS]. */
void
JobqSlotsFree(bool *free_slot)
{
	int			i;

	SpinLockAcquire(&Pool->mutex);
	for (i = 0; i < JOBQ_MAX_WORKERS; i++)
		free_slot[i] = (Pool->workers[i].pid == 0);
	SpinLockRelease(&Pool->mutex);
}

/*
 * The launcher: become the pool's launcher, with a new generation, which
 * it returns.  A worker registered by a previous launcher that has not
 * started yet steps aside when it starts; the running ones stay, and the
 * new launcher adopts them.
 */
uint32
JobqLauncherBegin(void)
{
	uint32		generation;

	SpinLockAcquire(&Pool->mutex);
	generation = ++Pool->launcher_generation;
	Pool->launcher_pid = MyProcPid;
	Pool->launcher_pgprocno = MyProc->pgprocno;
	SpinLockRelease(&Pool->mutex);
	return generation;
}

/* The launcher exits; the workers go on without it. */
void
JobqLauncherEnd(void)
{
	SpinLockAcquire(&Pool->mutex);
	if (Pool->launcher_pid == MyProcPid)
		Pool->launcher_pid = 0;
	SpinLockRelease(&Pool->mutex);
}

/* The process that holds slot, 0 if none. */
pid_t
JobqSlotHolder(int slot)
{
	pid_t		pid;

	SpinLockAcquire(&Pool->mutex);
	pid = Pool->workers[slot].pid;
	SpinLockRelease(&Pool->mutex);
	return pid;
}

/* The launcher starts a worker in slot: a fresh start, no old stop request. */
void
JobqSlotPrepare(int slot)
{
	SpinLockAcquire(&Pool->mutex);
	Pool->workers[slot].stop_requested = false;
	Pool->workers[slot].ready = false;
	SpinLockRelease(&Pool->mutex);
}

/*
 * The worker of slot stopped: had it reached its main loop, did it exit
 * to be recycled, had it been asked to stop?
 */
void
JobqSlotExitState(int slot, bool *ready, bool *recycled, bool *stopping)
{
	SpinLockAcquire(&Pool->mutex);
	*ready = Pool->workers[slot].ready;
	*recycled = Pool->workers[slot].recycled;
	*stopping = Pool->workers[slot].stop_requested;
	SpinLockRelease(&Pool->mutex);
}

/*
 * The pool grew back before the worker of slot, asked to stop, has gone:
 * it stays.  (If it is already on its way out, the launcher starts it
 * again when it has gone.)
 */
void
JobqSlotCancelStop(int slot)
{
	SpinLockAcquire(&Pool->mutex);
	Pool->workers[slot].stop_requested = false;
	SpinLockRelease(&Pool->mutex);
}

/* The pool shrank: ask the worker of slot to finish and exit. */
void
JobqSlotRequestStop(int slot)
{
	int			procno = -1;

	SpinLockAcquire(&Pool->mutex);
	if (!Pool->workers[slot].stop_requested)
	{
		Pool->workers[slot].stop_requested = true;
		if (Pool->workers[slot].pid != 0)
			procno = Pool->workers[slot].pgprocno;
	}
	SpinLockRelease(&Pool->mutex);
	if (procno >= 0)
		SetLatch(&ProcGlobal->allProcs[procno].procLatch);
}

/*
 * A worker takes its slot, for the launcher of generation.  False if that
 * launcher is gone or the slot is held.  *recycled says the previous
 * process in the slot exited to give another owner a fresh session; its
 * counts then go on.
 */
bool
JobqSlotAttach(int slot, uint32 generation, bool *recycled)
{
	JobqWorkerSlot *w = &Pool->workers[slot];

	SpinLockAcquire(&Pool->mutex);
	if (Pool->launcher_generation != generation || w->pid != 0)
	{
		SpinLockRelease(&Pool->mutex);
		return false;
	}
	w->pid = MyProcPid;
	w->pgprocno = MyProc->pgprocno;
	w->started_at = GetCurrentTimestamp();
	w->generation = generation;
	w->busy = false;
	w->job_id = 0;
	*recycled = w->recycled;
	if (!w->recycled)
	{
		w->n_succeeded = 0;
		w->n_retried = 0;
		w->n_failed = 0;
	}
	w->recycled = false;
	SpinLockRelease(&Pool->mutex);
	return true;
}

/* The worker of slot reached its main loop: its exit is no start failure. */
void
JobqSlotReady(int slot)
{
	SpinLockAcquire(&Pool->mutex);
	Pool->workers[slot].ready = true;
	SpinLockRelease(&Pool->mutex);
}

/*
 * The worker gives its slot back, if it still holds it, and wakes the
 * launcher: one that adopted the worker learns of its exit only so.
 */
void
JobqSlotDetach(int slot)
{
	JobqWorkerSlot *w = &Pool->workers[slot];
	int			launcher = -1;

	SpinLockAcquire(&Pool->mutex);
	if (w->pid == MyProcPid)
	{
		w->pid = 0;
		w->busy = false;
		w->job_id = 0;
	}
	if (Pool->launcher_pid != 0)
		launcher = Pool->launcher_pgprocno;
	SpinLockRelease(&Pool->mutex);
	if (launcher >= 0)
		SetLatch(&ProcGlobal->allProcs[launcher].procLatch);
}

/* A busy worker claims again by itself, so wake-ups pass it by. */
void
JobqSlotSetBusy(int slot, bool busy)
{
	SpinLockAcquire(&Pool->mutex);
	Pool->workers[slot].busy = busy;
	SpinLockRelease(&Pool->mutex);
}

bool
JobqSlotStopRequested(int slot)
{
	bool		stop;

	SpinLockAcquire(&Pool->mutex);
	stop = Pool->workers[slot].stop_requested;
	SpinLockRelease(&Pool->mutex);
	return stop;
}

/* The worker of slot runs no job now. */
void
JobqSlotEndJob(int slot)
{
	SpinLockAcquire(&Pool->mutex);
	Pool->workers[slot].job_id = 0;
	SpinLockRelease(&Pool->mutex);
}

/* Count committed outcomes, for jobq.workers. */
void
JobqSlotCountOutcomes(int slot, uint64 succeeded, uint64 retried,
					  uint64 failed)
{
	JobqWorkerSlot *w = &Pool->workers[slot];

	SpinLockAcquire(&Pool->mutex);
	w->n_succeeded += succeeded;
	w->n_retried += retried;
	w->n_failed += failed;
	SpinLockRelease(&Pool->mutex);
}

/*
 * The worker exits to be started again at once for a fresh session: its
 * counts go on, and it is busy, so that wake-ups go to other workers.
 */
void
JobqSlotRecycle(int slot)
{
	SpinLockAcquire(&Pool->mutex);
	Pool->workers[slot].recycled = true;
	Pool->workers[slot].busy = true;
	SpinLockRelease(&Pool->mutex);
}

/*
 * Set the latches of up to n live workers that are not busy, starting
 * where the previous wake-up stopped so that work spreads over the pool.
 */
void
JobqWakeWorkers(int n)
{
	int			procnos[JOBQ_MAX_WORKERS];
	int			nwake = 0;
	int			start;
	int			i;

	if (Pool == NULL || n <= 0)
		return;

	SpinLockAcquire(&Pool->mutex);
	start = Pool->next_wake;
	for (i = 0; i < JOBQ_MAX_WORKERS && nwake < n; i++)
	{
		int			k = (start + i) % JOBQ_MAX_WORKERS;
		JobqWorkerSlot *slot = &Pool->workers[k];

		if (slot->pid != 0 && !slot->busy)
		{
			procnos[nwake++] = slot->pgprocno;
			Pool->next_wake = (k + 1) % JOBQ_MAX_WORKERS;
		}
	}
	SpinLockRelease(&Pool->mutex);

	for (i = 0; i < nwake; i++)
		SetLatch(&ProcGlobal->allProcs[procnos[i]].procLatch);
}

/*
 * Set the latch of every live worker, busy or not.
 */
void
JobqWakeAllWorkers(void)
{
	int			procnos[JOBQ_MAX_WORKERS];
	int			nwake = 0;
	int			i;

	if (Pool == NULL)
		return;

	SpinLockAcquire(&Pool->mutex);
	for (i = 0; i < JOBQ_MAX_WORKERS; i++)
		if (Pool->workers[i].pid != 0)
			procnos[nwake++] = Pool->workers[i].pgprocno;
	SpinLockRelease(&Pool->mutex);

	for (i = 0; i < nwake; i++)
		SetLatch(&ProcGlobal->allProcs[procnos[i]].procLatch);
}

/*
 * A worker's watchdog ends job id by making the worker exit (worker.c):
 * note why, for the settlement of its journal entry.  Safe in a signal
 * handler: two atomic stores.
 */
void
JobqEscalationNote(int slot, int64 id, JobqEscalation reason)
{
	pg_atomic_write_u32(&Pool->escalated_reason[slot], (uint32) reason);
	pg_write_barrier();
	pg_atomic_write_u64(&Pool->escalated_job[slot], (uint64) id);
}

/*
 * Why the worker of slot ended job id by exiting, if it did, without
 * forgetting it: a settlement reads it before its transaction commits and
 * forgets it (JobqEscalationTake) only once the commit has recorded it, so
 * that a settlement that fails leaves the reason to the next one.
 */
JobqEscalation
JobqEscalationPeek(int slot, int64 id)
{
	if (id == 0 || pg_atomic_read_u64(&Pool->escalated_job[slot]) != (uint64) id)
		return JOBQ_ESCALATE_NONE;
	pg_read_barrier();
	return (JobqEscalation) pg_atomic_read_u32(&Pool->escalated_reason[slot]);
}

/*
 * Why the worker of slot ended job id by exiting, if it did; forgets it.
 */
JobqEscalation
JobqEscalationTake(int slot, int64 id)
{
	uint64		expected = (uint64) id;

	if (id == 0 ||
		!pg_atomic_compare_exchange_u64(&Pool->escalated_job[slot],
										&expected, 0))
		return JOBQ_ESCALATE_NONE;
	pg_read_barrier();
	return (JobqEscalation) pg_atomic_read_u32(&Pool->escalated_reason[slot]);
}

/*
 * Interrupt the worker that is running job id, if one is: it checks the
 * cancel requests on SIGUSR2.
 */
void
JobqSignalJobWorker(int64 id)
{
	pid_t		pid = 0;
	int			i;

	SpinLockAcquire(&Pool->mutex);
	for (i = 0; i < JOBQ_MAX_WORKERS; i++)
		if (Pool->workers[i].pid != 0 && Pool->workers[i].job_id == id)
			pid = Pool->workers[i].pid;
	SpinLockRelease(&Pool->mutex);
	if (pid != 0)
		(void) kill(pid, SIGUSR2);
}

/*
 * How many workers run a job of queue (if not NULL) and of owner (if
 * valid) now.
 */
static int
count_running(const char *queue, Oid owner)
{
	int			n = 0;
	int			i;

	SpinLockAcquire(&Pool->mutex);
	for (i = 0; i < JOBQ_MAX_WORKERS; i++)
	{
		JobqWorkerSlot *w = &Pool->workers[i];

		if (w->pid != 0 && w->job_id != 0 &&
			(queue == NULL || strcmp(w->job_queue, queue) == 0) &&
			(!OidIsValid(owner) || w->job_owner == owner))
			n++;
	}
	SpinLockRelease(&Pool->mutex);
	return n;
}

int
JobqQueueRunning(const char *queue)
{
	return count_running(queue, InvalidOid);
}

int
JobqOwnerRunning(Oid owner)
{
	return count_running(NULL, owner);
}

/*
 * Note in a worker's slot the job it starts.  With limit > 0 (the queue's
 * concurrency), only if fewer than limit workers run a job of its queue;
 * with owner_limit >= 0 (its role's max_running), only if fewer than that
 * run a job of its owner.  Counting and taking happen under one lock, so
 * the pool never exceeds a limit.  False if the queue or the role is full.
 */
bool
JobqSlotBeginJob(int slot, int64 job_id, Oid owner, int32 attempt,
				 TimestampTz started, const char *queue, int limit,
				 int owner_limit)
{
	JobqWorkerSlot *w = &Pool->workers[slot];
	int			i;

	SpinLockAcquire(&Pool->mutex);
	if (limit > 0 || owner_limit >= 0)
	{
		int			in_queue = 0;
		int			of_owner = 0;

		for (i = 0; i < JOBQ_MAX_WORKERS; i++)
		{
			JobqWorkerSlot *o = &Pool->workers[i];

			if (i == slot || o->pid == 0 || o->job_id == 0)
				continue;
			if (strcmp(o->job_queue, queue) == 0)
				in_queue++;
			if (o->job_owner == owner)
				of_owner++;
		}
		if ((limit > 0 && in_queue >= limit) ||
			(owner_limit >= 0 && of_owner >= owner_limit))
		{
			SpinLockRelease(&Pool->mutex);
			return false;
		}
	}
	w->job_id = job_id;
	w->job_owner = owner;
	w->job_attempt = attempt;
	w->job_started_at = started;
	strlcpy(w->job_queue, queue, NAMEDATALEN);
	SpinLockRelease(&Pool->mutex);
	return true;
}

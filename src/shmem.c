/*-------------------------------------------------------------------------
 *
 * shmem.c
 *		jobq's shared state, and the wake-up of workers at commit.
 *
 * The segment holds the launcher's identity and one slot per worker (with
 * the job it is running, which jobq.jobs shows as running).  A
 * spinlock guards it: every critical section is a handful of loads and
 * stores, and nothing in them can raise an error.  Latches are set after
 * the spinlock is released.
 *
 * Wake-up: jobq.enqueue() notes the job in backend-local state and, the
 * first time in a backend, registers a callback.  When the enqueuing
 * transaction has committed, the callback sets the latches of as many
 * idle workers as jobs became due (a worker marked busy claims again when
 * its batch is done, so it needs no wake-up).  A job due in the future
 * wakes one idle worker only if it is due before the earliest wake-up the
 * idle workers already know of.  An aborted transaction wakes nobody.
 *
 * IDENTIFICATION
 *		src/shmem.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "jobq.h"

JobqSharedState *JobqShared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Backend-local record of what the current transaction enqueued. */
static bool release_callback_registered = false;
static int	pending_due_jobs = 0;
static TimestampTz pending_min_future = DT_NOEND;

static void
jobq_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(JobqSharedState)));
	JobqJournalShmemRequest();
}

static void
jobq_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	JobqShared = ShmemInitStruct("jobq", sizeof(JobqSharedState), &found);
	if (!found)
	{
		/* First start, or re-initialisation after a crash. */
		memset(JobqShared, 0, sizeof(JobqSharedState));
		SpinLockInit(&JobqShared->mutex);
		JobqShared->next_due = DT_NOEND;
		JobqShared->next_prune = 0;
		/* a fresh segment: the journal holds what ran before, if anything */
		JobqShared->deaths = 1;
		JobqShared->settled_deaths = 0;
	}
	LWLockRelease(AddinShmemInitLock);
}

void
JobqShmemInstallHooks(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = jobq_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = jobq_shmem_startup;
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

	if (JobqShared == NULL || n <= 0)
		return;

	SpinLockAcquire(&JobqShared->mutex);
	start = JobqShared->next_wake;
	for (i = 0; i < JOBQ_MAX_WORKERS && nwake < n; i++)
	{
		int			k = (start + i) % JOBQ_MAX_WORKERS;
		JobqWorkerSlot *slot = &JobqShared->workers[k];

		if (slot->pid != 0 && !slot->busy)
		{
			procnos[nwake++] = slot->pgprocno;
			JobqShared->next_wake = (k + 1) % JOBQ_MAX_WORKERS;
		}
	}
	SpinLockRelease(&JobqShared->mutex);

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

	if (JobqShared == NULL)
		return;

	SpinLockAcquire(&JobqShared->mutex);
	for (i = 0; i < JOBQ_MAX_WORKERS; i++)
		if (JobqShared->workers[i].pid != 0)
			procnos[nwake++] = JobqShared->workers[i].pgprocno;
	SpinLockRelease(&JobqShared->mutex);

	for (i = 0; i < nwake; i++)
		SetLatch(&ProcGlobal->allProcs[procnos[i]].procLatch);
}

/*
 * The launcher saw a worker die: every worker settles the journal before
 * its next claim (journal.c).
 */
void
JobqNoteWorkerDeath(void)
{
	SpinLockAcquire(&JobqShared->mutex);
	JobqShared->deaths++;
	SpinLockRelease(&JobqShared->mutex);
}

/*
 * Must the worker in slot settle the journal before it claims?
 */
bool
JobqSettleNeeded(int slot)
{
	bool		needed;

	SpinLockAcquire(&JobqShared->mutex);
	needed = !JobqShared->workers[slot].settled ||
		JobqShared->settled_deaths != JobqShared->deaths;
	SpinLockRelease(&JobqShared->mutex);
	return needed;
}

static TimestampTz
get_next_due(void)
{
	TimestampTz due;

	SpinLockAcquire(&JobqShared->mutex);
	due = JobqShared->next_due;
	SpinLockRelease(&JobqShared->mutex);
	return due;
}

void
JobqSetNextDue(TimestampTz due)
{
	SpinLockAcquire(&JobqShared->mutex);
	JobqShared->next_due = due;
	SpinLockRelease(&JobqShared->mutex);
}

/*
 * Wake workers for what the transaction enqueued, once it has committed.
 *
 * This is a resource-release callback rather than a transaction callback
 * on purpose: XACT_EVENT_COMMIT fires before the committing backend has
 * sent its catalog invalidations, so a worker woken there could run the
 * job with stale caches (say, a role that the same transaction just made
 * NOLOGIN).  The AFTER_LOCKS phase of the top-level release comes after
 * the invalidations and after the locks are gone.  It also runs at
 * PREPARE TRANSACTION: that wake-up finds nothing yet, and COMMIT PREPARED
 * is covered by the poll.  An abort wakes nobody.
 */
static void
jobq_release_callback(ResourceReleasePhase phase, bool isCommit,
					  bool isTopLevel, void *arg)
{
	if (phase != RESOURCE_RELEASE_AFTER_LOCKS || !isTopLevel)
		return;

	if (isCommit)
	{
		if (pending_due_jobs > 0)
			JobqWakeWorkers(pending_due_jobs);
		else if (pending_min_future != DT_NOEND &&
				 pending_min_future < get_next_due())
		{
			/* an idle worker must shorten its sleep */
			JobqSetNextDue(pending_min_future);
			JobqWakeWorkers(1);
		}
	}
	pending_due_jobs = 0;
	pending_min_future = DT_NOEND;
}

/*
 * Remember that the current transaction enqueued a job due at run_at.
 */
void
JobqNoteEnqueue(TimestampTz run_at)
{
	if (!release_callback_registered)
	{
		RegisterResourceReleaseCallback(jobq_release_callback, NULL);
		release_callback_registered = true;
	}

	if (run_at <= GetCurrentTimestamp())
	{
		if (pending_due_jobs < JOBQ_MAX_WORKERS)
			pending_due_jobs++;
	}
	else if (run_at < pending_min_future)
		pending_min_future = run_at;
}

/*-------------------------------------------------------------------------
 *
 * wakeup.c
 *		Waking workers, and jobq.wait() callers, when a transaction commits.
 *
 * A transaction that enqueues a job, finishes one or changes queue
 * settings notes it here, in backend-local state; the first time in a
 * backend, that registers a callback.  When the transaction has committed,
 * the callback sets the latches of as many idle workers as jobs became due
 * (a worker marked busy claims again when its batch is done, so it needs
 * no wake-up), and wakes the jobq.wait() callers of the jobs it finished
 * (requests.c).  A job due in the future wakes one idle worker only if it
 * is due before the earliest wake-up the idle workers already know of,
 * which the idle workers publish here (JobqSetNextDue).  An aborted
 * transaction wakes nobody.  Whether it commits or not, the keys it
 * enqueued go to the claim floors (floors.c).  The callback also completes
 * depend.c's handshake of enqueues and finishes after the commit.
 *
 * Jobs of external tasks are not the workers' (lease.c): a transaction
 * that makes one due, or changes what the executors may claim, sets
 * instead the latches of the backends blocked in jobq.claim(wait => ...),
 * which register here.
 *
 * IDENTIFICATION
 *		src/wakeup.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "jobq.h"
#include "depend.h"
#include "floors.h"
#include "requests.h"
#include "slots.h"
#include "wakeup.h"

/* the earliest wake-up the idle workers know of, DT_NOEND for none */
typedef struct JobqWakeupState
{
	pg_atomic_uint64 next_due;
	/* backends blocked in jobq.claim(): how many, and which (by pgprocno) */
	pg_atomic_uint32 n_claim_waiters;
	pg_atomic_uint32 claim_waiting[FLEXIBLE_ARRAY_MEMBER];
} JobqWakeupState;

static JobqWakeupState *Wakeup = NULL;

/* Backend-local record of what the current transaction did. */
static bool release_callback_registered = false;
static int	pending_due_jobs = 0;
static TimestampTz pending_min_future = DT_NOEND;
static bool pending_claimers = false;	/* wake the blocked jobq.claim() */
static bool claim_waiting = false;	/* this backend is registered */
/* the jobs the transaction finished, for the jobq.wait() callers */
#define JOBQ_PENDING_FINISHED	64
static int64 pending_finished[JOBQ_PENDING_FINISHED];
static int	n_pending_finished = 0;	/* > JOBQ_PENDING_FINISHED: overflowed */
/*
 * The smallest key enqueued per priority level, for each set of claim
 * floors (the workers' jobs, the external executors').
 */
#define JOBQ_PENDING_LEVELS		8
typedef struct PendingKeys
{
	bool		any;
	int			n;
	bool		overflow;		/* more levels than levels[] holds */
	JobqFloor	levels[JOBQ_PENDING_LEVELS];
} PendingKeys;
static PendingKeys pending_keys[JOBQ_NUM_FLOOR_SETS];

Size
JobqWakeupShmemSize(void)
{
	return MAXALIGN(add_size(offsetof(JobqWakeupState, claim_waiting),
							 mul_size(sizeof(pg_atomic_uint32), MaxBackends)));
}

/* at the server's start, and again after a crash; under AddinShmemInitLock */
void
JobqWakeupShmemInit(void)
{
	bool		found;

	Wakeup = ShmemInitStruct("jobq wakeup", JobqWakeupShmemSize(), &found);
	if (!found)
	{
		int			i;

		pg_atomic_init_u64(&Wakeup->next_due, (uint64) DT_NOEND);
		pg_atomic_init_u32(&Wakeup->n_claim_waiters, 0);
		for (i = 0; i < MaxBackends; i++)
			pg_atomic_init_u32(&Wakeup->claim_waiting[i], 0);
	}
}

/*
 * This backend is about to sleep in jobq.claim() until a job it may take
 * is committed: register it, before it looks for jobs a last time, so that
 * no commit after that look is missed.
 */
void
JobqClaimWaitBegin(void)
{
	if (claim_waiting || MyProc->pgprocno >= MaxBackends)
		return;
	pg_atomic_write_u32(&Wakeup->claim_waiting[MyProc->pgprocno], 1);
	pg_atomic_fetch_add_u32(&Wakeup->n_claim_waiters, 1);
	claim_waiting = true;
}

/* the end of jobq.claim()'s wait, also on error (see lease.c) */
void
JobqClaimWaitEnd(void)
{
	if (!claim_waiting)
		return;
	pg_atomic_write_u32(&Wakeup->claim_waiting[MyProc->pgprocno], 0);
	pg_atomic_fetch_sub_u32(&Wakeup->n_claim_waiters, 1);
	claim_waiting = false;
}

/* set the latch of every backend blocked in jobq.claim() */
static void
wake_claimers(void)
{
	int			i;

	if (pg_atomic_read_u32(&Wakeup->n_claim_waiters) == 0)
		return;
	for (i = 0; i < MaxBackends; i++)
		if (pg_atomic_read_u32(&Wakeup->claim_waiting[i]) != 0)
			SetLatch(&ProcGlobal->allProcs[i].procLatch);
}

/*
 * An idle worker publishes when it will look again by itself (DT_NOEND:
 * not before it is woken, or the poll).
 */
void
JobqSetNextDue(TimestampTz due)
{
	pg_atomic_write_u64(&Wakeup->next_due, (uint64) due);
}

static TimestampTz
get_next_due(void)
{
	return (TimestampTz) pg_atomic_read_u64(&Wakeup->next_due);
}

/*
 * Something is due at t (a job, or a lease's expiry): if the idle workers
 * would sleep past it, one must shorten its sleep.
 */
void
JobqWakeWorkerBy(TimestampTz t)
{
	if (t < get_next_due())
	{
		JobqSetNextDue(t);
		JobqWakeWorkers(1);
	}
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
	int			i;

	if (phase != RESOURCE_RELEASE_AFTER_LOCKS || !isTopLevel)
		return;

	for (i = 0; i < JOBQ_NUM_FLOOR_SETS; i++)
	{
		PendingKeys *pk = &pending_keys[i];

		if (pk->any)
			JobqFloorsNoteKeys((JobqFloorSetId) i, pk->levels, pk->n, pk->overflow);
		pk->any = false;
		pk->n = 0;
		pk->overflow = false;
	}

	if (isCommit && Wakeup != NULL)
	{
		if (pending_due_jobs > 0)
			JobqWakeWorkers(pending_due_jobs);
		else if (pending_min_future != DT_NOEND)
			JobqWakeWorkerBy(pending_min_future);
	}
	if (isCommit && pending_claimers && Wakeup != NULL)
		wake_claimers();
	if (isCommit && n_pending_finished > 0)
		JobqWakeWaitersOf(pending_finished,
						  Min(n_pending_finished, JOBQ_PENDING_FINISHED),
						  n_pending_finished > JOBQ_PENDING_FINISHED);
	/* dependents that the enqueue and the finish may both have missed */
	JobqDependAtEndOfXact(isCommit && Wakeup != NULL);
	n_pending_finished = 0;
	pending_due_jobs = 0;
	pending_min_future = DT_NOEND;
	pending_claimers = false;
}

static void
register_callback(void)
{
	if (!release_callback_registered)
	{
		RegisterResourceReleaseCallback(jobq_release_callback, NULL);
		release_callback_registered = true;
	}
}

/*
 * Something of the current transaction is to be done when it ends, by the
 * callback above (depend.c's handshake).
 */
void
JobqRegisterAtCommit(void)
{
	register_callback();
}

/*
 * Remember that the current transaction enqueued job id of priority,
 * due at run_at (or made it due again).  A job of an external task wakes
 * the blocked jobq.claim() callers instead of the workers; they find out
 * themselves when a job due later is due.
 */
void
JobqNoteEnqueue(TimestampTz run_at, int16 priority, int64 id, bool external)
{
	PendingKeys *pk = &pending_keys[external ? JOBQ_FLOORS_EXECUTORS : JOBQ_FLOORS_WORKERS];
	int			i;

	register_callback();
	pk->any = true;
	for (i = 0; i < pk->n; i++)
		if (pk->levels[i].priority == priority)
			break;
	if (i < pk->n)
	{
		if (JobqFloorKeyLess(run_at, id, &pk->levels[i]))
		{
			pk->levels[i].run_at = run_at;
			pk->levels[i].id = id;
		}
	}
	else if (pk->n < JOBQ_PENDING_LEVELS)
	{
		pk->levels[pk->n].priority = priority;
		pk->levels[pk->n].run_at = run_at;
		pk->levels[pk->n].id = id;
		pk->n++;
	}
	else
		pk->overflow = true;

	if (external)
	{
		pending_claimers = true;
		return;
	}
	if (run_at <= GetCurrentTimestamp())
	{
		if (pending_due_jobs < JOBQ_MAX_WORKERS)
			pending_due_jobs++;
	}
	else if (run_at < pending_min_future)
		pending_min_future = run_at;
}

/*
 * The current transaction finishes jobs ids[0..n-1]: wake their
 * jobq.wait() callers when it commits.
 */
void
JobqNoteFinishedAtCommit(const int64 *ids, int n)
{
	int			i;

	register_callback();
	for (i = 0; i < n && n_pending_finished <= JOBQ_PENDING_FINISHED; i++)
	{
		if (n_pending_finished < JOBQ_PENDING_FINISHED)
			pending_finished[n_pending_finished] = ids[i];
		n_pending_finished++;
	}
}

/*
 * The current transaction changed queue settings: wake every worker when
 * it commits (a resumed queue's jobs are due).
 */
void
JobqWakeAllAtCommit(void)
{
	register_callback();
	pending_due_jobs = JOBQ_MAX_WORKERS;
	pending_claimers = true;
}

/*
 * The current transaction ended a job of an external task: a queue or a
 * role at its limit may take another one, so the blocked jobq.claim()
 * callers look again when it commits.
 */
void
JobqWakeClaimersAtCommit(void)
{
	register_callback();
	pending_claimers = true;
}

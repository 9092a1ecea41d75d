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
 * enqueued go to the claim floors (floors.c).
 *
 * IDENTIFICATION
 *		src/wakeup.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "port/atomics.h"
#include "storage/shmem.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "jobq.h"

/* the earliest wake-up the idle workers know of, DT_NOEND for none */
typedef struct JobqWakeupState
{
	pg_atomic_uint64 next_due;
} JobqWakeupState;

static JobqWakeupState *Wakeup = NULL;

/* Backend-local record of what the current transaction did. */
static bool release_callback_registered = false;
static int	pending_due_jobs = 0;
static TimestampTz pending_min_future = DT_NOEND;
static bool pending_any = false;
/* the jobs the transaction finished, for the jobq.wait() callers */
#define JOBQ_PENDING_FINISHED	64
static int64 pending_finished[JOBQ_PENDING_FINISHED];
static int	n_pending_finished = 0;	/* > JOBQ_PENDING_FINISHED: overflowed */
/* the smallest key enqueued per priority level, for the claim floors */
#define JOBQ_PENDING_LEVELS		8
static JobqFloor pending_levels[JOBQ_PENDING_LEVELS];
static int	n_pending_levels = 0;
static bool pending_levels_overflow = false;

Size
JobqWakeupShmemSize(void)
{
	return MAXALIGN(sizeof(JobqWakeupState));
}

/* at the server's start, and again after a crash; under AddinShmemInitLock */
void
JobqWakeupShmemInit(void)
{
	bool		found;

	Wakeup = ShmemInitStruct("jobq wakeup", JobqWakeupShmemSize(), &found);
	if (!found)
		pg_atomic_init_u64(&Wakeup->next_due, (uint64) DT_NOEND);
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

	if (pending_any)
		JobqFloorsNoteKeys(pending_levels, n_pending_levels,
						   pending_levels_overflow);

	if (isCommit && Wakeup != NULL)
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
	if (isCommit && n_pending_finished > 0)
		JobqWakeWaitersOf(pending_finished,
						  Min(n_pending_finished, JOBQ_PENDING_FINISHED),
						  n_pending_finished > JOBQ_PENDING_FINISHED);
	n_pending_finished = 0;
	pending_due_jobs = 0;
	pending_min_future = DT_NOEND;
	pending_any = false;
	n_pending_levels = 0;
	pending_levels_overflow = false;
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
 * Remember that the current transaction enqueued job id of priority,
 * due at run_at.
 */
void
JobqNoteEnqueue(TimestampTz run_at, int16 priority, int64 id)
{
	int			i;

	register_callback();
	pending_any = true;
	for (i = 0; i < n_pending_levels; i++)
		if (pending_levels[i].priority == priority)
			break;
	if (i < n_pending_levels)
	{
		if (JobqFloorKeyLess(run_at, id, &pending_levels[i]))
		{
			pending_levels[i].run_at = run_at;
			pending_levels[i].id = id;
		}
	}
	else if (n_pending_levels < JOBQ_PENDING_LEVELS)
	{
		pending_levels[n_pending_levels].priority = priority;
		pending_levels[n_pending_levels].run_at = run_at;
		pending_levels[n_pending_levels].id = id;
		n_pending_levels++;
	}
	else
		pending_levels_overflow = true;

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
}

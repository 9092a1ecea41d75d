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

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
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
static bool pending_any = false;
/* the jobs the transaction finished, for the jobq.wait() callers */
#define JOBQ_PENDING_FINISHED	64
static int64 pending_finished[JOBQ_PENDING_FINISHED];
static int	n_pending_finished = 0;	/* > JOBQ_PENDING_FINISHED: overflowed */
static void wake_waiters(void);
/* the smallest key enqueued per priority level, for the claim floors */
#define JOBQ_PENDING_LEVELS		8
static int	n_pending_levels = 0;

static void taint_claims_locked(int16 priority, bool all, TimestampTz run_at,
								int64 id);
static bool pending_levels_overflow = false;
static JobqFloor pending_levels[JOBQ_PENDING_LEVELS];

static Size
shmem_size(void)
{
	return MAXALIGN(sizeof(JobqSharedState));
}

static void
jobq_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(shmem_size());
	RequestAddinShmemSpace(JobqPruneShmemSize());
	RequestAddinShmemSpace(JobqRequestsShmemSize());
}

static void
jobq_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	JobqShared = ShmemInitStruct("jobq", shmem_size(), &found);
	if (!found)
	{
		/* First start, or re-initialisation after a crash. */
		memset(JobqShared, 0, shmem_size());
		SpinLockInit(&JobqShared->mutex);
		JobqShared->next_due = DT_NOEND;
		/* a fresh segment: the journal holds what ran before, if anything */
		JobqShared->deaths = 1;
		JobqShared->settled_deaths = 0;
		/* levels unknown until a worker discovers them */
		JobqShared->floors_valid = false;
		for (int i = 0; i < JOBQ_MAX_WORKERS; i++)
		{
			pg_atomic_init_u64(&JobqShared->escalated_job[i], 0);
			pg_atomic_init_u32(&JobqShared->escalated_reason[i], 0);
		}
		/* set once a job waits for others (depend.c) */
		pg_atomic_init_u32(&JobqShared->dependents, 0);
	}
	JobqPruneShmemInit();
	JobqRequestsShmemInit();
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
	/* its claimed jobs are claimable again, wherever the floors are */
	JobqShared->floors_valid = false;
	taint_claims_locked(0, true, DT_NOBEGIN, 0);
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
 * Claim floors (see claim.c).  Keys compare by (run_at, id) within one
 * priority level.
 */
static inline bool
key_less(TimestampTz run_at, int64 id, const JobqFloor *f)
{
	return run_at < f->run_at || (run_at == f->run_at && id < f->id);
}

static int
find_level(int16 priority)
{
	int			i;

	for (i = 0; i < JobqShared->nfloors; i++)
		if (JobqShared->floors[i].priority == priority)
			return i;
	return -1;
}

/*
 * A key appeared below which a claim in progress (of that level, or of
 * any level with all) must not raise its floor; caller holds the mutex.
 */
static void
taint_claims_locked(int16 priority, bool all, TimestampTz run_at, int64 id)
{
	int			i;

	for (i = 0; i < JOBQ_MAX_WORKERS; i++)
	{
		JobqWorkerSlot *w = &JobqShared->workers[i];

		if (w->claiming && (all || w->claim_level == priority) &&
			(run_at < w->taint_run_at ||
			 (run_at == w->taint_run_at && id < w->taint_id)))
		{
			w->taint_run_at = run_at;
			w->taint_id = id;
		}
	}
}

/*
 * Lower (or add) the floor of a level; caller holds the mutex.  The list
 * of levels is kept even while the floors are not valid, so that a
 * rediscovery misses no level enqueued after its snapshot.
 */
static void
lower_floor_locked(int16 priority, TimestampTz run_at, int64 id)
{
	int			k = find_level(priority);

	taint_claims_locked(priority, false, run_at, id);
	if (k >= 0)
	{
		if (key_less(run_at, id, &JobqShared->floors[k]))
		{
			JobqShared->floors[k].run_at = run_at;
			JobqShared->floors[k].id = id;
		}
		return;
	}
	if (JobqShared->floors_overflowed)
		return;
	if (JobqShared->nfloors >= JOBQ_FLOOR_LEVELS)
	{
		/* too many levels: claims scan from the start again */
		JobqShared->floors_overflowed = true;
		JobqShared->floors_valid = false;
		return;
	}
	/* a new level, kept in descending priority order */
	for (k = JobqShared->nfloors; k > 0 &&
		 JobqShared->floors[k - 1].priority < priority; k--)
		JobqShared->floors[k] = JobqShared->floors[k - 1];
	JobqShared->floors[k].priority = priority;
	JobqShared->floors[k].run_at = run_at;
	JobqShared->floors[k].id = id;
	JobqShared->nfloors++;
}

/*
 * At the end of a transaction that enqueued (commit or abort, and also at
 * PREPARE): every key it enqueued must be at or above its level's floor,
 * and taints the claims in progress, so that no worker raises a floor past
 * jobs its snapshot may not have seen.  Lowering for an abort is merely
 * conservative.
 */
static void
note_enqueued_keys(void)
{
	int			i;

	if (JobqShared == NULL)
		return;
	SpinLockAcquire(&JobqShared->mutex);
	for (i = 0; i < n_pending_levels; i++)
		lower_floor_locked(pending_levels[i].priority, pending_levels[i].run_at,
						   pending_levels[i].id);
	if (pending_levels_overflow)
	{
		JobqShared->floors_overflowed = true;
		JobqShared->floors_valid = false;
		taint_claims_locked(0, true, DT_NOBEGIN, 0);
	}
	SpinLockRelease(&JobqShared->mutex);
}

/*
 * Copy the priority levels, highest first; false if the floors are not
 * valid (claim from the start).
 */
bool
JobqFloorsGet(int16 *levels, int *n)
{
	bool		valid;
	int			i;

	SpinLockAcquire(&JobqShared->mutex);
	valid = JobqShared->floors_valid;
	*n = JobqShared->nfloors;
	for (i = 0; i < JobqShared->nfloors; i++)
		levels[i] = JobqShared->floors[i].priority;
	SpinLockRelease(&JobqShared->mutex);
	return valid;
}

/*
 * A claim of one level begins: *floor is where it starts.  From now until
 * JobqFloorClaimEnd, every key that appears in that level (an enqueue's
 * commit, a job let go) taints the claim: it will not raise the floor
 * past that key, which its snapshot may not have seen.  False if the
 * level has no floor (claim from the start).
 */
bool
JobqFloorClaimBegin(int slot, int16 priority, JobqFloor *floor)
{
	JobqWorkerSlot *w = &JobqShared->workers[slot];
	int			k;
	bool		ok = false;

	SpinLockAcquire(&JobqShared->mutex);
	k = find_level(priority);
	if (JobqShared->floors_valid && k >= 0)
	{
		*floor = JobqShared->floors[k];
		w->claiming = true;
		w->claim_level = priority;
		w->taint_run_at = DT_NOEND;
		w->taint_id = PG_INT64_MAX;
		ok = true;
	}
	SpinLockRelease(&JobqShared->mutex);
	return ok;
}

/*
 * The claim is over; with raise, it locked jobs up to key (run_at, id):
 * raise the level's floor there, or to the claim's taint if lower.
 */
void
JobqFloorClaimEnd(int slot, int16 priority, bool raise,
				  TimestampTz run_at, int64 id)
{
	JobqWorkerSlot *w = &JobqShared->workers[slot];
	JobqFloor	target = {priority, run_at, id};
	int			k;

	SpinLockAcquire(&JobqShared->mutex);
	k = find_level(priority);
	if (raise && JobqShared->floors_valid && k >= 0)
	{
		if (key_less(w->taint_run_at, w->taint_id, &target))
		{
			target.run_at = w->taint_run_at;
			target.id = w->taint_id;
		}
		if (key_less(JobqShared->floors[k].run_at, JobqShared->floors[k].id,
					 &target))
		{
			JobqShared->floors[k].run_at = target.run_at;
			JobqShared->floors[k].id = target.id;
		}
	}
	w->claiming = false;
	SpinLockRelease(&JobqShared->mutex);
}

/*
 * A claimed job goes back unrun (its lock is gone with the commit that
 * called us): it must be at or above its level's floor.
 */
void
JobqFloorLower(int16 priority, TimestampTz run_at, int64 id)
{
	SpinLockAcquire(&JobqShared->mutex);
	lower_floor_locked(priority, run_at, id);
	SpinLockRelease(&JobqShared->mutex);
}

/*
 * Forget the floors (an execution transaction aborted, a worker died):
 * claims scan from the start until a worker discovers the levels again.
 */
void
JobqFloorsReset(void)
{
	SpinLockAcquire(&JobqShared->mutex);
	JobqShared->floors_valid = false;
	taint_claims_locked(0, true, DT_NOBEGIN, 0);
	SpinLockRelease(&JobqShared->mutex);
}

/*
 * Is a discovery of the levels due?  It is while the floors are not
 * valid, and every JOBQ_FLOOR_RESCAN_POLLS times jobq.poll_interval as a
 * safety net (a job enqueued by a prepared transaction, or unlocked by a
 * session other than a worker, may lie below its floor until then).  Not
 * more often: the claims after it walk the dead head of the index once,
 * which costs seconds under a long-held xmin.  If due, the caller takes
 * it; after an overflow the list of levels starts empty, before the
 * caller's snapshot.
 */
bool
JobqFloorsRediscoveryDue(void)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		due;

	SpinLockAcquire(&JobqShared->mutex);
	due = !JobqShared->floors_valid || JobqShared->floors_rediscover_at <= now;
	if (due)
	{
		JobqShared->floors_rediscover_at =
			TimestampTzPlusMilliseconds(now, (int64) jobq_poll_interval *
										JOBQ_FLOOR_RESCAN_POLLS);
		if (JobqShared->floors_overflowed)
		{
			JobqShared->nfloors = 0;
			JobqShared->floors_overflowed = false;
		}
	}
	SpinLockRelease(&JobqShared->mutex);
	return due;
}

/*
 * Install discovered levels: every floor goes back to the start (always
 * safe), discovered levels join the list, and the floors are valid again
 * unless there are too many levels.
 */
void
JobqFloorsInstall(const int16 *levels, int n)
{
	int			i;

	SpinLockAcquire(&JobqShared->mutex);
	for (i = 0; i < n; i++)
		lower_floor_locked(levels[i], DT_NOBEGIN, 0);
	for (i = 0; i < JobqShared->nfloors; i++)
	{
		JobqShared->floors[i].run_at = DT_NOBEGIN;
		JobqShared->floors[i].id = 0;
	}
	JobqShared->floors_valid = !JobqShared->floors_overflowed;
	/* a claim in progress started above the floors now at the start */
	taint_claims_locked(0, true, DT_NOBEGIN, 0);
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

	if (pending_any)
		note_enqueued_keys();

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
	if (isCommit && n_pending_finished > 0)
		wake_waiters();
	n_pending_finished = 0;
	pending_due_jobs = 0;
	pending_min_future = DT_NOEND;
	pending_any = false;
	n_pending_levels = 0;
	pending_levels_overflow = false;
}

/*
 * Remember that the current transaction enqueued a job due at run_at.
 */
void
JobqNoteEnqueue(TimestampTz run_at, int16 priority, int64 id)
{
	int			i;

	if (!release_callback_registered)
	{
		RegisterResourceReleaseCallback(jobq_release_callback, NULL);
		release_callback_registered = true;
	}

	pending_any = true;
	for (i = 0; i < n_pending_levels; i++)
		if (pending_levels[i].priority == priority)
			break;
	if (i < n_pending_levels)
	{
		if (key_less(run_at, id, &pending_levels[i]))
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
 * A worker's watchdog ends job id by making the worker exit (worker.c):
 * note why, for the settlement of its journal entry.  Safe in a signal
 * handler: two atomic stores.
 */
void
JobqEscalationNote(int slot, int64 id, JobqEscalation reason)
{
	pg_atomic_write_u32(&JobqShared->escalated_reason[slot], (uint32) reason);
	pg_write_barrier();
	pg_atomic_write_u64(&JobqShared->escalated_job[slot], (uint64) id);
}

/*
 * Why the worker of slot ended job id by exiting, if it did; forgets it.
 */
JobqEscalation
JobqEscalationTake(int slot, int64 id)
{
	uint64		expected = (uint64) id;

	if (id == 0 ||
		!pg_atomic_compare_exchange_u64(&JobqShared->escalated_job[slot],
										&expected, 0))
		return JOBQ_ESCALATE_NONE;
	pg_read_barrier();
	return (JobqEscalation) pg_atomic_read_u32(&JobqShared->escalated_reason[slot]);
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

	SpinLockAcquire(&JobqShared->mutex);
	for (i = 0; i < JOBQ_MAX_WORKERS; i++)
		if (JobqShared->workers[i].pid != 0 && JobqShared->workers[i].job_id == id)
			pid = JobqShared->workers[i].pid;
	SpinLockRelease(&JobqShared->mutex);
	if (pid != 0)
		(void) kill(pid, SIGUSR2);
}

/*
 * The transaction that finished the jobs of pending_finished committed:
 * wake whoever waits for one of them.
 */
static void
wake_waiters(void)
{
	JobqWakeWaitersOf(pending_finished, Min(n_pending_finished, JOBQ_PENDING_FINISHED),
					  n_pending_finished > JOBQ_PENDING_FINISHED);
}

/*
 * The current transaction finishes jobs ids[0..n-1]: wake their
 * jobq.wait() callers when it commits.
 */
void
JobqNoteFinishedAtCommit(const int64 *ids, int n)
{
	int			i;

	if (!release_callback_registered)
	{
		RegisterResourceReleaseCallback(jobq_release_callback, NULL);
		release_callback_registered = true;
	}
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
	if (!release_callback_registered)
	{
		RegisterResourceReleaseCallback(jobq_release_callback, NULL);
		release_callback_registered = true;
	}
	pending_due_jobs = JOBQ_MAX_WORKERS;
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

	SpinLockAcquire(&JobqShared->mutex);
	for (i = 0; i < JOBQ_MAX_WORKERS; i++)
	{
		JobqWorkerSlot *w = &JobqShared->workers[i];

		if (w->pid != 0 && w->job_id != 0 &&
			(queue == NULL || strcmp(w->job_queue, queue) == 0) &&
			(!OidIsValid(owner) || w->job_owner == owner))
			n++;
	}
	SpinLockRelease(&JobqShared->mutex);
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
	JobqWorkerSlot *w = &JobqShared->workers[slot];
	int			i;

	SpinLockAcquire(&JobqShared->mutex);
	if (limit > 0 || owner_limit >= 0)
	{
		int			in_queue = 0;
		int			of_owner = 0;

		for (i = 0; i < JOBQ_MAX_WORKERS; i++)
		{
			JobqWorkerSlot *o = &JobqShared->workers[i];

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
			SpinLockRelease(&JobqShared->mutex);
			return false;
		}
	}
	w->job_id = job_id;
	w->job_owner = owner;
	w->job_attempt = attempt;
	w->job_started_at = started;
	strlcpy(w->job_queue, queue, NAMEDATALEN);
	SpinLockRelease(&JobqShared->mutex);
	return true;
}

/* May some job wait for others?  (Set once one does; never cleared.) */
bool
JobqDependentsMayExist(void)
{
	return pg_atomic_read_u32(&JobqShared->dependents) != 0;
}

void
JobqNoteDependents(bool exist)
{
	pg_atomic_write_u32(&JobqShared->dependents, exist ? 1 : 0);
}

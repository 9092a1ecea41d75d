/*-------------------------------------------------------------------------
 *
 * requests.c
 *		Requests about single jobs: jobq.cancel() and jobq.wait().
 *
 * A backend that cancels a job a worker holds publishes the job's id, and
 * the worker looks for it (before and while it runs the job, from its
 * SIGUSR2 handler); a backend that waits for a job publishes that id, and
 * the commit that finishes the job wakes it through finished_cv.  This
 * file owns that piece of shared memory: one entry per backend.
 *
 * IDENTIFICATION
 *		src/requests.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "jobq.h"
#include "requests.h"

/*
 * One backend's entry: the job its jobq.cancel() is cancelling and the job
 * its jobq.wait() waits for, 0 for none.
 */
typedef struct JobqRequest
{
	pg_atomic_uint64 cancel_id;
	pg_atomic_uint64 cancel_at;	/* when cancel_id was published */
	pg_atomic_uint64 cancel_done;	/* cancel_id, once recorded cancelled */
	pg_atomic_uint64 wait_id;
} JobqRequest;

typedef struct JobqRequestState
{
	int			nrequests;		/* MaxBackends */
	pg_atomic_uint32 n_cancels; /* entries taken, so that an idle array */
	pg_atomic_uint32 n_waits;	/* costs one read to check */
	pg_atomic_uint32 wait_any;	/* waiters without an entry of their own */
	ConditionVariable finished_cv;
	JobqRequest entries[FLEXIBLE_ARRAY_MEMBER];
} JobqRequestState;

/* Most job ids a transaction marks cancelled for their cancellers. */
#define JOBQ_MAX_CANCEL_MARKS	64

static JobqRequestState *Requests = NULL;

Size
JobqRequestsShmemSize(void)
{
	return add_size(offsetof(JobqRequestState, entries),
					mul_size(MaxBackends, sizeof(JobqRequest)));
}

/* at the server's start, and again after a crash; under AddinShmemInitLock */
void
JobqRequestsShmemInit(void)
{
	bool		found;

	Requests = ShmemInitStruct("jobq requests", JobqRequestsShmemSize(), &found);
	if (!found)
	{
		Requests->nrequests = MaxBackends;
		pg_atomic_init_u32(&Requests->n_cancels, 0);
		pg_atomic_init_u32(&Requests->n_waits, 0);
		pg_atomic_init_u32(&Requests->wait_any, 0);
		ConditionVariableInit(&Requests->finished_cv);
		for (int i = 0; i < Requests->nrequests; i++)
		{
			pg_atomic_init_u64(&Requests->entries[i].cancel_id, 0);
			pg_atomic_init_u64(&Requests->entries[i].cancel_at, 0);
			pg_atomic_init_u64(&Requests->entries[i].cancel_done, 0);
			pg_atomic_init_u64(&Requests->entries[i].wait_id, 0);
		}
	}
}

/*
 * Requests about single jobs.  Each backend has one entry, at its
 * pgprocno, and writes only that one; entries are read without a lock,
 * from a worker's signal handler among others.  A backend is in at most
 * one jobq.cancel() at a time (nothing runs user code while it waits); a
 * jobq.wait() nested in another (a job run in place that waits) falls
 * back to being woken by every finish.  Nothing here can run out, so no
 * role can keep another's calls from working.
 */
static JobqRequest *
my_request(void)
{
	if (MyProc == NULL || MyProc->pgprocno < 0 ||
		MyProc->pgprocno >= Requests->nrequests)
		elog(ERROR, "jobq has no request entry for process %d", MyProcPid);
	return &Requests->entries[MyProc->pgprocno];
}

/* is id in the cancel (or, with wait, the wait) entry of some backend? */
static bool
request_present(int64 id, bool wait)
{
	int			i;

	for (i = 0; i < Requests->nrequests; i++)
	{
		JobqRequest *r = &Requests->entries[i];

		if (pg_atomic_read_u64(wait ? &r->wait_id : &r->cancel_id) == (uint64) id)
			return true;
	}
	return false;
}

/*
 * jobq.cancel() of a job that a worker holds: publish the request (the
 * worker checks it before it starts the job, when it starts it, and from
 * its SIGUSR2 handler while it runs it), with the time it was published,
 * from which the worker's watchdog counts jobq.cancel_grace.  Returns the
 * entry to remove afterwards.
 *
 * n_cancels is raised before the entry is published and lowered after it
 * is withdrawn, so it is never below the number of published entries: a
 * reader that finds it 0 may conclude that nobody cancels anything.  (The
 * other order left a window, while one caller withdrew its entry and
 * another published its own, in which a published request went unseen.)
 */
int
JobqCancelRequestAdd(int64 id)
{
	JobqRequest *r = my_request();

	if (pg_atomic_read_u64(&r->cancel_id) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot cancel job " INT64_FORMAT " while this session cancels another job", id)));
	/* a full barrier: counted before anyone can see the entry */
	pg_atomic_fetch_add_u32(&Requests->n_cancels, 1);
	pg_atomic_write_u64(&r->cancel_done, 0);
	pg_atomic_write_u64(&r->cancel_at, (uint64) GetCurrentTimestamp());
	/* the time is in before the id that makes the entry a request */
	pg_write_barrier();
	pg_atomic_write_u64(&r->cancel_id, (uint64) id);
	return MyProc->pgprocno;
}

void
JobqCancelRequestRemove(int idx)
{
	JobqRequest *r = &Requests->entries[idx];

	/* a free entry's done mark is 0 (the mark is set only for taken ones) */
	pg_atomic_write_u64(&r->cancel_done, 0);
	/* uncounted only once withdrawn (the exchange is a full barrier) */
	if (pg_atomic_exchange_u64(&r->cancel_id, 0) != 0)
		pg_atomic_fetch_sub_u32(&Requests->n_cancels, 1);
}

/*
 * The worker whose transaction records job id as cancelled marks the
 * requests for it done: the canceller then knows the outcome even when no
 * history keeps it (jobq.retention = 0).  The mark is set before the
 * commit and taken back if the transaction aborts, in a transaction
 * callback, which runs before the aborting transaction lets go of its row
 * locks: a canceller, which reads the mark only once the job's row is gone
 * and its lock free, does not take a mark of an aborted transaction for
 * the outcome.
 */
static int64 cancels_marked[JOBQ_MAX_CANCEL_MARKS];
static int	n_cancels_marked = 0;
static bool cancel_callback_registered = false;

static void
cancel_marks_xact_callback(XactEvent event, void *arg)
{
	int			i,
				j;

	if (n_cancels_marked == 0)
		return;
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
	{
		for (i = 0; i < n_cancels_marked; i++)
			for (j = 0; j < Requests->nrequests; j++)
			{
				uint64		expected = (uint64) cancels_marked[i];

				(void) pg_atomic_compare_exchange_u64(&Requests->entries[j].cancel_done,
													  &expected, 0);
			}
	}
	else if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_PARALLEL_COMMIT)
		return;
	n_cancels_marked = 0;
}

void
JobqCancelRequestDone(int64 id)
{
	int			i;
	bool		marked = false;

	if (!JobqCancelRequested(id) || n_cancels_marked >= JOBQ_MAX_CANCEL_MARKS)
		return;
	if (!cancel_callback_registered)
	{
		RegisterXactCallback(cancel_marks_xact_callback, NULL);
		cancel_callback_registered = true;
	}
	for (i = 0; i < Requests->nrequests; i++)
	{
		JobqRequest *r = &Requests->entries[i];

		if (pg_atomic_read_u64(&r->cancel_id) == (uint64) id)
		{
			pg_atomic_write_u64(&r->cancel_done, (uint64) id);
			marked = true;
		}
	}
	if (marked)
		cancels_marked[n_cancels_marked++] = id;
}

/* Did a committed transaction record the job of request idx cancelled? */
bool
JobqCancelRequestWasDone(int idx, int64 id)
{
	return pg_atomic_read_u64(&Requests->entries[idx].cancel_done) == (uint64) id;
}

/* Has jobq.cancel() asked for job id?  Safe in a signal handler. */
bool
JobqCancelRequested(int64 id)
{
	if (Requests == NULL || id == 0 ||
		pg_atomic_read_u32(&Requests->n_cancels) == 0)
		return false;
	return request_present(id, false);
}

/*
 * Has jobq.cancel() asked for job id, and since when?  *since gets the
 * time the oldest request for it still in place was published.  The
 * worker's watchdog counts jobq.cancel_grace from it, so it needs no
 * memory of its own of when it first saw a request: a request stays in
 * place until its caller returns, and a look that misses one (entries are
 * read one by one, while callers come and go) delays the end of the job
 * by one look at most, instead of starting the grace over.  Safe in a
 * signal handler.
 */
bool
JobqCancelRequestedSince(int64 id, TimestampTz *since)
{
	bool		found = false;
	int			i;

	if (Requests == NULL || id == 0 ||
		pg_atomic_read_u32(&Requests->n_cancels) == 0)
		return false;
	for (i = 0; i < Requests->nrequests; i++)
	{
		JobqRequest *r = &Requests->entries[i];
		TimestampTz at;

		if (pg_atomic_read_u64(&r->cancel_id) != (uint64) id)
			continue;
		/* the time was written before the id */
		pg_read_barrier();
		at = (TimestampTz) pg_atomic_read_u64(&r->cancel_at);
		if (!found || at < *since)
			*since = at;
		found = true;
	}
	return found;
}

/*
 * jobq.wait() begins: workers wake finished_cv when job id finishes.
 * Returns the entry for JobqWaitEnd; -1 if every entry is taken, and then
 * every finishing commit wakes the waiters.
 */
int
JobqWaitBegin(int64 id)
{
	JobqRequest *r = my_request();
	int			idx = -1;

	pg_atomic_fetch_add_u32(&Requests->n_waits, 1);
	if (pg_atomic_read_u64(&r->wait_id) == 0)
	{
		pg_atomic_write_u64(&r->wait_id, (uint64) id);
		idx = MyProc->pgprocno;
	}
	else
		pg_atomic_fetch_add_u32(&Requests->wait_any, 1);
	pg_memory_barrier();
	return idx;
}

void
JobqWaitEnd(int idx)
{
	if (idx < 0)
		pg_atomic_fetch_sub_u32(&Requests->wait_any, 1);
	else
		pg_atomic_write_u64(&Requests->entries[idx].wait_id, 0);
	pg_atomic_fetch_sub_u32(&Requests->n_waits, 1);
}

/*
 * A transaction that finished jobs ids[0..n-1] (and more, if overflowed)
 * committed: wake whoever waits for one of them.
 */
void
JobqWakeWaitersOf(const int64 *ids, int n, bool overflowed)
{
	bool		wake;
	int			i;

	if (pg_atomic_read_u32(&Requests->n_waits) == 0)
		return;
	wake = overflowed || pg_atomic_read_u32(&Requests->wait_any) > 0;
	for (i = 0; i < n && !wake; i++)
		wake = request_present(ids[i], true);
	if (wake)
		ConditionVariableBroadcast(&Requests->finished_cv);
}

/* jobq.wait(): sleep until a commit that finished a job, at most ms */
void
JobqWaitPrepareToSleep(void)
{
	ConditionVariablePrepareToSleep(&Requests->finished_cv);
}

void
JobqWaitSleep(long ms)
{
	(void) ConditionVariableTimedSleep(&Requests->finished_cv, ms,
									   PG_WAIT_EXTENSION);
}

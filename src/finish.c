/*-------------------------------------------------------------------------
 *
 * finish.c
 *		Every way a job ends, or is scheduled again after an error.
 *
 * A job ends when a worker's chunk records its outcome, when jobq.cancel()
 * cancels it, when jobq.wait() ran it in place, when a job it depends on
 * did not succeed, when its worker died in its last attempt, or, for a job
 * of an external task, when its executor reports an outcome or its lease
 * expires (lease.c).  All of
 * them come here, to JobqFinishJobs(), with the jobs' rows locked by the
 * current transaction, and the outcome of each:
 *	- a finished job (succeeded, failed, cancelled) leaves jobq.job by its
 *	  tuple id and enters jobq.job_history, built column by column through
 *	  one map (the job's row, with the columns of its end set from the
 *	  outcome), in one multi-insert without SQL (store.c); with
 *	  jobq.retention 0 it is only deleted;
 *	- a job to retry stays in jobq.job with its attempt counted, its error,
 *	  and its next run_at, and an interrupted one goes behind the jobs due
 *	  now, each kind in one UPDATE for the lot (retry.c);
 *	- then, in the same transaction, the jobs that wait for the finished
 *	  ones are settled (depend.c decides; the cancelled ones end here too),
 *	  and at commit the jobq.wait() callers of the finished jobs are woken.
 * Adding a column to jobq.job means the schema scripts, the map below (if
 * the column is set when a job ends) and the status type.
 *
 * Outcome fields that a caller does not know stay as the job has them:
 * attempts < 0, started_at 0, error NULL, and for a retry next_run_at 0.
 *
 * IDENTIFICATION
 *		src/finish.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "jobq.h"
#include "depend.h"
#include "requests.h"
#include "wakeup.h"

/* where a locked job's row is now, after the job itself updated it */
static const char *find_job_sql =
"SELECT ctid FROM jobq.job WHERE id OPERATOR(pg_catalog.=) $1";

static void finish_jobs(JobqJob *jobs, JobqOutcome *outcomes, int n,
						bool settle);

static SPIPlanPtr find_job_plan = NULL;
static SPIPlanPtr crashed_plan = NULL;

/*
 * Attempts of jobs whose worker died in them (journal.c): only a job still
 * at the attempt before the journaled one is touched, so an attempt is
 * counted once however many workers settle it; a job that is locked is
 * being run again by a live worker already and is left alone.
 */
static const char *crashed_sql =
"SELECT j.id, j.ctid, j.priority, j.run_at, j.max_attempts, o.attempt"
"  FROM jobq.job j"
"  JOIN ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]),"
"                  pg_catalog.unnest($2::pg_catalog.int4[])) AS o(id, attempt)"
"    ON j.id OPERATOR(pg_catalog.=) o.id"
" WHERE j.attempts OPERATOR(pg_catalog.=) (o.attempt OPERATOR(pg_catalog.-) 1)"
"   FOR UPDATE OF j SKIP LOCKED";

static const char *crashed_error =
"the worker running the job exited before the job finished";

/* last_error of a job that ran past its timeout and ignored the cancel */
static const char *timeout_error =
"job ran past its timeout and did not stop within jobq.cancel_grace";

/*
 * The history row of a finished job, column by column: where each value
 * comes from.
 */
typedef enum HistorySource
{
	HS_NULL,					/* a column this library does not fill */
	HS_JOB,						/* copied from jobq.job's column */
	HS_RUN_AT,					/* not_before if set (it waited), else run_at */
	HS_STATE,
	HS_ATTEMPTS,
	HS_STARTED_AT,
	HS_FINISHED_AT,
	HS_RESULT,
	HS_LAST_ERROR,
	HS_LAST_SQLSTATE,
	HS_WORKER_PID
} HistorySource;

static JobqTable job_store = {.relname = "job"};
static JobqTable history_store = {.relname = "job_history"};
static uint64 job_map_gen = 0;
static uint64 history_map_job_gen = 0;
static uint64 history_map_history_gen = 0;
static HistorySource *history_source;	/* per history column */
static AttrNumber *history_job_attno;	/* per history column: job's column */
static AttrNumber job_id_attno;
static AttrNumber job_not_before_attno;
static Datum state_succeeded;
static Datum state_failed;
static Datum state_cancelled;

/* the transaction that last finished jobs (see JobqClaimedJobGone) */
static LocalTransactionId touched_lxid = InvalidLocalTransactionId;

static void
build_history_map(void)
{
	TupleDesc	hdesc = history_store.desc;
	int			i;

	/* rebuilt whenever either table's description is */
	if (history_source != NULL)
	{
		pfree(history_source);
		pfree(history_job_attno);
		history_source = NULL;
		history_job_attno = NULL;
	}
	history_source = MemoryContextAlloc(TopMemoryContext,
										sizeof(HistorySource) * hdesc->natts);
	history_job_attno = MemoryContextAllocZero(TopMemoryContext,
											   sizeof(AttrNumber) * hdesc->natts);

	for (i = 0; i < hdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(hdesc, i);
		const char *name = NameStr(att->attname);
		HistorySource src = HS_NULL;

		if (att->attisdropped)
			;
		else if (strcmp(name, "state") == 0)
		{
			(void) JobqTableColumn(&history_store, name, ANYENUMOID, true);
			state_succeeded = DirectFunctionCall2(enum_in, CStringGetDatum("succeeded"),
												  ObjectIdGetDatum(att->atttypid));
			state_failed = DirectFunctionCall2(enum_in, CStringGetDatum("failed"),
											   ObjectIdGetDatum(att->atttypid));
			state_cancelled = DirectFunctionCall2(enum_in, CStringGetDatum("cancelled"),
												  ObjectIdGetDatum(att->atttypid));
			src = HS_STATE;
		}
		else if (strcmp(name, "run_at") == 0)
		{
			src = HS_RUN_AT;
			history_job_attno[i] = JobqTableColumn(&job_store, name,
												   TIMESTAMPTZOID, true);
		}
		else if (strcmp(name, "attempts") == 0 ||
				 strcmp(name, "started_at") == 0 ||
				 strcmp(name, "last_error") == 0 ||
				 strcmp(name, "last_sqlstate") == 0)
		{
			/* the outcome's, or else the job's own */
			src = name[0] == 'a' ? HS_ATTEMPTS :
				name[0] == 's' ? HS_STARTED_AT :
				strcmp(name, "last_error") == 0 ? HS_LAST_ERROR : HS_LAST_SQLSTATE;
			history_job_attno[i] = JobqTableColumn(&job_store, name, att->atttypid,
												   true);
		}
		else if (strcmp(name, "finished_at") == 0)
			src = HS_FINISHED_AT;
		else if (strcmp(name, "result") == 0)
			src = HS_RESULT;
		else if (strcmp(name, "worker_pid") == 0)
			src = HS_WORKER_PID;
		else
		{
			AttrNumber	j = JobqTableColumn(&job_store, name, InvalidOid, false);

			if (j != InvalidAttrNumber &&
				TupleDescAttr(job_store.desc, j - 1)->atttypid == att->atttypid)
			{
				src = HS_JOB;
				history_job_attno[i] = j;
			}
		}
		if (src == HS_NULL && att->attnotnull && !att->attisdropped)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("unrecognized column \"%s\" in relation \"jobq.job_history\"",
							name),
					 errdetail("This version of the jobq library does not know how to fill it."),
					 errhint("Install the jobq library that matches the extension's version.")));
		history_source[i] = src;
	}
	/* the columns filled here must have the types they are given */
	(void) JobqTableColumn(&history_store, "attempts", INT4OID, true);
	(void) JobqTableColumn(&history_store, "started_at", TIMESTAMPTZOID, true);
	(void) JobqTableColumn(&history_store, "finished_at", TIMESTAMPTZOID, true);
	(void) JobqTableColumn(&history_store, "result", JSONBOID, true);
	(void) JobqTableColumn(&history_store, "last_error", TEXTOID, true);
	(void) JobqTableColumn(&history_store, "last_sqlstate", TEXTOID, true);
	(void) JobqTableColumn(&history_store, "worker_pid", INT4OID, true);

	history_map_job_gen = job_store.generation;
	history_map_history_gen = history_store.generation;
}

/* the job table's columns read here, after its description changed */
static void
build_job_map(void)
{
	job_id_attno = JobqTableColumn(&job_store, "id", INT8OID, true);
	job_not_before_attno = JobqTableColumn(&job_store, "not_before",
										   TIMESTAMPTZOID, false);
	job_map_gen = job_store.generation;
}

/*
 * Read a locked job's row into slot: the version its lock holds, or, if a
 * statement of this transaction (the job itself, run by a superuser)
 * updated that row, its newest version.  False if the row was deleted by
 * this transaction.
 */
static bool
fetch_locked(Relation jobrel, JobqJob *job, TupleTableSlot *slot,
			 bool *spi_connected)
{
	HeapTuple	tup;
	bool		should_free;
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(job->id)};
	bool		isnull;

	if (!table_tuple_fetch_row_version(jobrel, &job->tid, SnapshotAny, slot) ||
		DatumGetInt64(slot_getattr(slot, job_id_attno, &isnull)) != job->id)
		elog(ERROR, "jobq job " INT64_FORMAT " is not where its lock found it",
			 job->id);

	/*
	 * Only this transaction can have touched a row it holds locked: then
	 * xmax is an updater, not just the lock.  Find the row again by id, as
	 * a statement would.
	 */
	tup = ExecFetchSlotHeapTuple(slot, false, &should_free);
	Assert(!should_free);
	if ((tup->t_data->t_infomask & HEAP_XMAX_INVALID) ||
		HEAP_XMAX_IS_LOCKED_ONLY(tup->t_data->t_infomask))
		return true;
	ExecClearTuple(slot);

	if (!*spi_connected)
	{
		SPI_connect();
		*spi_connected = true;
	}
	if (JobqExecuteKept(JobqKeepPlan(&find_job_plan, find_job_sql, 1, argtypes),
						values, false) != SPI_OK_SELECT)
		elog(ERROR, "jobq could not look up job " INT64_FORMAT, job->id);
	if (SPI_processed == 0)
		return false;
	job->tid = *(ItemPointer) DatumGetPointer(SPI_getbinval(SPI_tuptable->vals[0],
														   SPI_tuptable->tupdesc,
														   1, &isnull));
	if (!table_tuple_fetch_row_version(jobrel, &job->tid, SnapshotAny, slot))
		elog(ERROR, "jobq job " INT64_FORMAT " is not where it was found",
			 job->id);
	return true;
}

/*
 * Was a claimed job ended by an earlier job of the same execution
 * transaction (its jobq.cancel() of a job this worker holds)?  Only this
 * transaction can change a row it holds locked.
 */
bool
JobqClaimedJobGone(JobqJob *job)
{
	Relation	rel;
	TupleTableSlot *slot;
	bool		gone = false;

	if (touched_lxid != MyProc->lxid)
		return false;

	rel = JobqTableOpen(&job_store);
	slot = MakeSingleTupleTableSlot(job_store.desc, &TTSOpsBufferHeapTuple);
	PushActiveSnapshot(GetTransactionSnapshot());
	if (!table_tuple_fetch_row_version(rel, &job->tid, SnapshotAny, slot))
		gone = true;
	else
	{
		bool		should_free;
		HeapTuple	tup = ExecFetchSlotHeapTuple(slot, false, &should_free);
		HeapTupleHeader h = tup->t_data;

		gone = !(h->t_infomask & HEAP_XMAX_INVALID) &&
			!HEAP_XMAX_IS_LOCKED_ONLY(h->t_infomask) &&
			ItemPointerEquals(&tup->t_self, &h->t_ctid) &&
			TransactionIdIsCurrentTransactionId(HeapTupleHeaderGetUpdateXid(h));
	}
	ExecDropSingleTupleTableSlot(slot);
	PopActiveSnapshot();
	table_close(rel, NoLock);
	return gone;
}

static bool
is_finished(JobqOutcomeKind kind)
{
	return kind == JOBQ_SUCCEEDED || kind == JOBQ_FAILED || kind == JOBQ_CANCELLED;
}

/*
 * Move the finished jobs among n to the history (or drop them, with
 * jobq.retention 0).  Needs an active snapshot (TOAST reads, deletes).
 */
static void
write_finished(JobqJob *jobs, JobqOutcome *outcomes, int n)
{
	bool		keep = jobq_retention > 0;
	Relation	jobrel = JobqTableOpen(&job_store);
	Relation	histrel = keep ? JobqTableOpen(&history_store) : NULL;
	TupleTableSlot *jslot;
	TupleTableSlot **hslots = NULL;
	bool		spi_connected = false;
	int			nh = 0;
	int			i;

	if (job_map_gen != job_store.generation)
		build_job_map();
	if (keep && (history_map_job_gen != job_store.generation ||
				 history_map_history_gen != history_store.generation))
		build_history_map();
	jslot = MakeSingleTupleTableSlot(job_store.desc, &TTSOpsBufferHeapTuple);
	if (keep)
		hslots = palloc(sizeof(TupleTableSlot *) * n);

	for (i = 0; i < n; i++)
	{
		JobqOutcome *o = &outcomes[i];
		TM_FailureData tmfd;
		TM_Result	tmr;

		if (!is_finished(o->kind))
			continue;
		if (!fetch_locked(jobrel, &jobs[i], jslot, &spi_connected))
			continue;			/* the job deleted its own row */

		if (keep)
		{
			TupleTableSlot *h = JobqTableSlot(&history_store);
			TupleDesc	hdesc = history_store.desc;
			int			c;

			slot_getallattrs(jslot);
			for (c = 0; c < hdesc->natts; c++)
			{
				Datum		v = (Datum) 0;
				bool		isnull = false;
				AttrNumber	ja = history_job_attno[c];
				bool		own = false;	/* the job's own value */

				switch (history_source[c])
				{
					case HS_NULL:
						isnull = true;
						break;
					case HS_JOB:
						own = true;
						break;
					case HS_RUN_AT:
						own = true;
						if (job_not_before_attno != InvalidAttrNumber &&
							!jslot->tts_isnull[job_not_before_attno - 1])
							ja = job_not_before_attno;
						break;
					case HS_STATE:
						v = o->kind == JOBQ_SUCCEEDED ? state_succeeded :
							o->kind == JOBQ_CANCELLED ? state_cancelled : state_failed;
						break;
					case HS_ATTEMPTS:
						own = jobs[i].attempts < 0;
						v = Int32GetDatum(jobs[i].attempts);
						break;
					case HS_STARTED_AT:
						own = o->started_at == 0;
						v = TimestampTzGetDatum(o->started_at);
						break;
					case HS_LAST_ERROR:
					case HS_LAST_SQLSTATE:
						own = o->error == NULL;
						if (own)
							break;
						if (history_source[c] == HS_LAST_ERROR)
							v = CStringGetTextDatum(o->error);
						else if (o->sqlstate[0] != '\0')
							v = CStringGetTextDatum(o->sqlstate);
						else
							isnull = true;
						break;
					case HS_FINISHED_AT:
						v = TimestampTzGetDatum(o->finished_at);
						break;
					case HS_RESULT:
						v = o->result;
						isnull = (o->result == (Datum) 0);
						break;
					case HS_WORKER_PID:
						v = Int32GetDatum(o->pid);
						isnull = (o->pid == 0);
						break;
				}
				if (own)
				{
					v = jslot->tts_values[ja - 1];
					isnull = jslot->tts_isnull[ja - 1];
				}
				h->tts_values[c] = v;
				h->tts_isnull[c] = isnull;
			}
			ExecStoreVirtualTuple(h);
			/* copy what points into the job's buffer before it is let go */
			ExecMaterializeSlot(h);
			hslots[nh++] = h;
		}
		ExecClearTuple(jslot);

		tmr = heap_delete(jobrel, &jobs[i].tid, GetCurrentCommandId(true),
						  InvalidSnapshot, true, &tmfd, false);
		if (tmr != TM_Ok)
			elog(ERROR, "jobq could not delete finished job " INT64_FORMAT ": %d",
				 jobs[i].id, (int) tmr);
		if (o->kind == JOBQ_CANCELLED)
			JobqCancelRequestDone(jobs[i].id);
	}
	ExecDropSingleTupleTableSlot(jslot);

	if (nh > 0)
		JobqTableInsert(&history_store, histrel, hslots, nh);
	for (i = 0; i < nh; i++)
		ExecDropSingleTupleTableSlot(hslots[i]);
	if (spi_connected)
		SPI_finish();

	if (histrel != NULL)
		table_close(histrel, NoLock);
	table_close(jobrel, NoLock);
}

/* the ids of the finished jobs among n, and how many */
static int
finished_ids(JobqJob *jobs, JobqOutcome *outcomes, int n, int64 *ids)
{
	int			k = 0;
	int			i;

	for (i = 0; i < n; i++)
		if (is_finished(outcomes[i].kind))
			ids[k++] = jobs[i].id;
	return k;
}

/*
 * Cancel nc waiting jobs whose job did not succeed (because[i] for
 * cancel[i]); returns the ids of those cancelled in *ids.
 */
static int
cancel_waiting(JobqJob *cancel, int64 *because, int nc, int64 **ids)
{
	JobqOutcome *co = palloc0(sizeof(JobqOutcome) * Max(nc, 1));
	int			i;

	for (i = 0; i < nc; i++)
	{
		co[i].kind = JOBQ_CANCELLED;
		co[i].finished_at = GetCurrentTransactionStartTimestamp();
		co[i].error = psprintf("job " INT64_FORMAT ", which this job depends on, did not succeed",
							   because[i]);
		strlcpy(co[i].sqlstate, unpack_sql_state(ERRCODE_QUERY_CANCELED),
				sizeof(co[i].sqlstate));
	}
	write_finished(cancel, co, nc);
	*ids = palloc(sizeof(int64) * Max(nc, 1));
	nc = finished_ids(cancel, co, nc, *ids);
	JobqNoteFinishedAtCommit(*ids, nc);
	/* before their own dependents are settled: see depend.c */
	JobqDependNoteFinished(*ids, nc);
	return nc;
}

/*
 * Jobs ids[0..n-1] ended in the current transaction: settle the jobs that
 * wait for them (freed, or cancelled here), and theirs in turn.
 */
static void
settle_dependents(int64 *ids, int n)
{
	int			depth;

	for (depth = 0; n > 0 && depth < 1000; depth++)
	{
		JobqJob    *cancel;
		int64	   *because;
		int			nc;

		CHECK_FOR_INTERRUPTS();
		nc = JobqSettleDependents(ids, n, &cancel, &because);
		if (nc == 0)
			break;
		n = cancel_waiting(cancel, because, nc, &ids);
	}
}

/*
 * Write the ends of n jobs, locked by the current transaction, and what
 * follows from them: see the top of the file.  Needs an active snapshot.
 */
void
JobqFinishJobs(JobqJob *jobs, JobqOutcome *outcomes, int n)
{
	finish_jobs(jobs, outcomes, n, true);
}

/* the same, settling the jobs that wait for them if settle */
static void
finish_jobs(JobqJob *jobs, JobqOutcome *outcomes, int n, bool settle)
{
	int64	   *ids;
	int			nids;

	touched_lxid = MyProc->lxid;
	write_finished(jobs, outcomes, n);
	JobqWriteRetries(jobs, outcomes, n);
	JobqWriteInterruptions(jobs, outcomes, n);

	ids = palloc(sizeof(int64) * Max(n, 1));
	nids = finished_ids(jobs, outcomes, n, ids);
	if (nids == 0)
		return;
	JobqNoteFinishedAtCommit(ids, nids);
	/* before the dependents are settled: see depend.c */
	JobqDependNoteFinished(ids, nids);

	/*
	 * Nothing waits until a job has waited since the server started (a
	 * flag in shared memory, set by an enqueue that makes a job wait and by
	 * a sweep that finds one, and never cleared).
	 */
	if (settle && JobqDependentsMayExist() && JobqSchemaGet()->tasks)
		settle_dependents(ids, nids);
}

/*
 * The safety net of dependencies: settle the waiting jobs that no
 * finishing transaction saw (a dependent enqueued while its last job
 * finished in another transaction, a job failed by the count of its dead
 * worker's attempt), in a transaction of its own.
 */
void
JobqSweepWaitingJobs(void)
{
	MemoryContext callercxt = CurrentMemoryContext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (JobqLockTables() && JobqSchemaGet()->tasks)
	{
		JobqJob    *cancel;
		int64	   *because;
		int64	   *ids;
		int			nc;

		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "jobq: settling jobs that wait for others");
		touched_lxid = MyProc->lxid;
		nc = JobqSettleWaitingJobs(&cancel, &because);
		if (nc > 0)
		{
			nc = cancel_waiting(cancel, because, nc, &ids);
			settle_dependents(ids, nc);
		}
		PopActiveSnapshot();
	}
	CommitTransactionCommand();
	MemoryContextSwitchTo(callercxt);
}

/*
 * Settle again the dependents of jobs that a transaction finished while
 * another enqueued a job waiting for them, each before the other
 * committed (depend.c hands their ids over), in a transaction of its own:
 * its snapshot sees both commits.  Too many of them: a sweep instead.
 */
void
JobqRecheckDependents(void)
{
	MemoryContext callercxt = CurrentMemoryContext;
	int64	   *ids = palloc(sizeof(int64) * JOBQ_DEPEND_RECHECK_QUEUE);
	int			n;
	bool		all;

	if (!JobqDependRecheckTake(ids, &n, &all))
	{
		pfree(ids);
		return;
	}
	if (all)
	{
		pfree(ids);
		JobqSweepWaitingJobs();
		return;
	}

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (JobqLockTables() && JobqSchemaGet()->tasks)
	{
		PushActiveSnapshot(GetTransactionSnapshot());
		pgstat_report_activity(STATE_RUNNING, "jobq: settling jobs that wait for others");
		touched_lxid = MyProc->lxid;
		settle_dependents(ids, n);
		PopActiveSnapshot();
	}
	CommitTransactionCommand();
	MemoryContextSwitchTo(callercxt);
	pfree(ids);
}

/*
 * Count the attempts that n jobs were in when their workers died (from
 * the journal, journal.c: attempt numbers, starts, pids, and why a worker
 * that ended a job by exiting did so), in the current transaction.  A job
 * with no attempt left fails (or, cancelled, ends cancelled); the others
 * are due again at once.  Returns how many jobs were changed; 0 if the
 * extension is not installed.
 */
int
JobqCountCrashedAttempts(int n, int64 *ids, int32 *attempts,
						 TimestampTz *started, int32 *pids,
						 JobqEscalation *reasons)
{
	Oid			argtypes[2] = {INT8ARRAYOID, INT4ARRAYOID};
	Datum		values[2];
	Datum	   *d_ids = palloc(sizeof(Datum) * n);
	Datum	   *d_attempts = palloc(sizeof(Datum) * n);
	bool	   *nonulls = palloc0(sizeof(bool) * n);
	JobqJob    *jobs;
	JobqOutcome *outcomes;
	int			nlocked;
	int			i;

	int			nd = 0;

	if (!JobqSchemaGet()->installed)
		return 0;

	for (i = 0; i < n; i++)
	{
		int			k;

		/* the canceller learns the outcome even with retention 0 */
		if (reasons[i] == JOBQ_ESCALATE_CANCEL)
			JobqCancelRequestDone(ids[i]);
		/* two dead workers may have been in the same attempt: count it once */
		for (k = 0; k < i && (ids[k] != ids[i] || attempts[k] != attempts[i]); k++)
			;
		if (k < i)
			continue;
		d_ids[nd] = Int64GetDatum(ids[i]);
		d_attempts[nd++] = Int32GetDatum(attempts[i]);
	}
	values[0] = JobqDatumArray(d_ids, nonulls, nd, INT8OID);
	values[1] = JobqDatumArray(d_attempts, nonulls, nd, INT4OID);

	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "jobq: counting attempts of exited workers");
	SPI_connect();
	if (JobqExecuteKept(JobqKeepPlan(&crashed_plan, crashed_sql, 2, argtypes),
						values, false) != SPI_OK_SELECT)
		elog(ERROR, "jobq could not count the attempts of exited workers");
	nlocked = (int) SPI_processed;
	/* outside SPI's memory, which SPI_finish() frees */
	jobs = SPI_palloc(sizeof(JobqJob) * Max(nlocked, 1));
	outcomes = SPI_palloc(sizeof(JobqOutcome) * Max(nlocked, 1));
	memset(jobs, 0, sizeof(JobqJob) * Max(nlocked, 1));
	memset(outcomes, 0, sizeof(JobqOutcome) * Max(nlocked, 1));
	for (i = 0; i < nlocked; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		JobqJob    *job = &jobs[i];
		JobqOutcome *o = &outcomes[i];
		bool		isnull;
		int32		attempt;
		int			e;

		job->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		job->tid = *(ItemPointer) DatumGetPointer(SPI_getbinval(tup, desc, 2, &isnull));
		job->priority = DatumGetInt16(SPI_getbinval(tup, desc, 3, &isnull));
		job->run_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 4, &isnull));
		job->max_attempts = DatumGetInt32(SPI_getbinval(tup, desc, 5, &isnull));
		attempt = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
		for (e = 0; e < n && (ids[e] != job->id || attempts[e] != attempt); e++)
			;
		if (e == n)
			elog(ERROR, "jobq locked job " INT64_FORMAT " for no journaled attempt", job->id);
		job->attempts = attempts[e];
		o->started_at = started[e];
		o->finished_at = GetCurrentTransactionStartTimestamp();
		o->pid = pids[e];
		o->error = unconstify(char *, crashed_error);
		if (reasons[e] == JOBQ_ESCALATE_TIMEOUT)
			o->error = unconstify(char *, timeout_error);
		else if (reasons[e] == JOBQ_ESCALATE_CANCEL)
			o->error = JOBQ_CANCELLED_MESSAGE;
		if (reasons[e] == JOBQ_ESCALATE_TIMEOUT || reasons[e] == JOBQ_ESCALATE_CANCEL)
			strlcpy(o->sqlstate, unpack_sql_state(ERRCODE_QUERY_CANCELED),
					sizeof(o->sqlstate));
		if (reasons[e] == JOBQ_ESCALATE_CANCEL)
			o->kind = JOBQ_CANCELLED;
		else if (job->attempts >= job->max_attempts)
			o->kind = JOBQ_FAILED;
		else
		{
			/*
			 * With the retries' back-off, like any failed attempt: due again
			 * at once, a job that kills its worker (or ignores its timeout
			 * until the watchdog ends it) would stay at the head of the
			 * queue, and the next worker would start it first, again and
			 * again until its attempts ran out.
			 */
			o->kind = JOBQ_RETRY;
			o->next_run_at = JobqNextAttemptTime(job->attempts);
		}
	}
	SPI_finish();

	if (nlocked > 0)
	{
		/*
		 * Not the jobs that wait for these: this transaction holds the
		 * settlement's lock, which every worker waits for, and a role could
		 * keep a waiting job's row locked; the sweep settles them.
		 */
		finish_jobs(jobs, outcomes, nlocked, false);
		ereport(LOG,
				(errmsg_plural("jobq counted the attempt of %d job whose worker exited while running it",
							   "jobq counted the attempts of %d jobs whose workers exited while running them",
							   nlocked, nlocked)));
	}
	PopActiveSnapshot();
	return nlocked;
}

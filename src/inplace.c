/*-------------------------------------------------------------------------
 *
 * inplace.c
 *		Running a job in the session of its jobq.wait() caller.
 *
 * No worker can see a job before the transaction that enqueued it
 * commits.  When that transaction itself waits for the job, jobq.wait()
 * would wait forever; instead it runs the job here, in the caller's
 * session and transaction, once, as the job's owner, and records the
 * outcome through the one finish path (finish.c).  Only the caller's own
 * jobs run so, and never inside a security-definer function: the job
 * would otherwise run in a session prepared by another identity.
 *
 * IDENTIFICATION
 *		src/inplace.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "jobq.h"

/*
 * Run job id, which the current transaction enqueued, here and now, and
 * record its outcome in the current transaction: the job's effects and
 * its outcome commit or roll back with the caller's work.  One attempt:
 * an error with attempts left schedules the next one as a worker would.
 * The job runs as its owner, with its owner's settings, in a
 * subtransaction; the caller's statement timeout bounds it, not the job's.
 */
void
JobqRunInPlace(int64 id)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(id)};
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;
	JobqJob		job;
	JobqOutcome out;
	MemoryContext job_context;
	MemoryContext oldcxt = CurrentMemoryContext;
	int64		saved_job_id;

#define INPLACE_SQL(external) \
	"SELECT owner::pg_catalog.oid, command, task, payload," \
	"       attempts OPERATOR(pg_catalog.+) 1, max_attempts," \
	"       ctid, priority, run_at, " external \
	"  FROM jobq.job WHERE id OPERATOR(pg_catalog.=) $1" \
	"   AND run_at OPERATOR(pg_catalog.<=) pg_catalog.now() FOR UPDATE"

	if (JobqExecuteAsOwner(JobqSchemaGet()->executors ?
						   INPLACE_SQL("external") : INPLACE_SQL("false"),
						   1, argtypes, values, false) != SPI_OK_SELECT)
		elog(ERROR, "could not read jobq job " INT64_FORMAT, id);
	if (SPI_processed == 0)
	{
		SPI_finish();
		return;
	}

	/* an external executor cannot see it before the caller commits */
	if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
								   10, &isnull)))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot wait for job " INT64_FORMAT " in the transaction that enqueued it", id),
				 errdetail("The job is of an external task: external executors run it once it is committed."),
				 errhint("Commit the job first, then wait for it.")));
	/*
	 * Not inside a SECURITY DEFINER function or a restricted operation: the
	 * job would run in a session its caller prepared (temporary objects,
	 * settings) with the definer's identity.
	 */
	if (InLocalUserIdChange() || InSecurityRestrictedOperation())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("cannot run job " INT64_FORMAT " in place inside a security-definer function", id),
				 errdetail("jobq.wait() of a job that its own transaction enqueued runs the job in the calling session."),
				 errhint("Commit the job first, then wait for it.")));
	/* both out of SPI's memory, which SPI_finish() frees */
	tup = SPI_copytuple(SPI_tuptable->vals[0]);
	{
		MemoryContext spicxt = MemoryContextSwitchTo(oldcxt);

		desc = CreateTupleDescCopy(SPI_tuptable->tupdesc);
		MemoryContextSwitchTo(spicxt);
	}
	SPI_finish();

	memset(&job, 0, sizeof(job));
	job.id = id;
	job.owner = DatumGetObjectId(heap_getattr(tup, 1, desc, &isnull));

	/*
	 * Only the caller's own job runs in the caller's session: another
	 * role's job (enqueued by its SECURITY DEFINER function in this
	 * transaction) could leave cursors, prepared statements or settings
	 * that the caller's session would then use with the caller's identity.
	 */
	if (job.owner != GetUserId())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("cannot run job " INT64_FORMAT " of role \"%s\" in place",
						id, GetUserNameFromId(job.owner, true) ?
						GetUserNameFromId(job.owner, true) : "?"),
				 errdetail("jobq.wait() runs a job that its own transaction enqueued in the calling session, and only for the calling role's own jobs."),
				 errhint("Commit the job first, then wait for it.")));
	d = heap_getattr(tup, 2, desc, &isnull);
	job.command = isnull ? NULL : TextDatumGetCString(d);
	d = heap_getattr(tup, 3, desc, &isnull);
	job.task = isnull ? NULL : TextDatumGetCString(d);
	d = heap_getattr(tup, 4, desc, &isnull);
	job.payload = isnull ? (Datum) 0 : PointerGetDatum(PG_DETOAST_DATUM_COPY(d));
	job.attempts = DatumGetInt32(heap_getattr(tup, 5, desc, &isnull));
	job.max_attempts = DatumGetInt32(heap_getattr(tup, 6, desc, &isnull));
	job.tid = *(ItemPointer) DatumGetPointer(heap_getattr(tup, 7, desc, &isnull));
	job.priority = DatumGetInt16(heap_getattr(tup, 8, desc, &isnull));
	job.run_at = DatumGetTimestampTz(heap_getattr(tup, 9, desc, &isnull));

	job_context = AllocSetContextCreate(CurrentMemoryContext, "jobq job run here",
										ALLOCSET_DEFAULT_SIZES);
	/* role settings are cached per execution transaction: not across calls */
	JobqForgetRoleSettings();
	saved_job_id = jobq_current_job_id;
	jobq_current_job_id = id;
	PG_TRY();
	{
		JobqExecuteJob(&job, &out, job_context, true);
	}
	PG_FINALLY();
	{
		jobq_current_job_id = saved_job_id;
		JobqForgetRoleSettings();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);

	/* its outcome, as a worker's chunk would record it */
	PushActiveSnapshot(GetTransactionSnapshot());
	JobqFinishJobs(&job, &out, 1);
	PopActiveSnapshot();
	MemoryContextDelete(job_context);
}

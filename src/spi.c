/*-------------------------------------------------------------------------
 *
 * spi.c
 *		Running jobq's own SQL statements.
 *
 * Three ways, one per kind of caller:
 *	- as the owner of jobq's tables, for the API's writes in a user's
 *	  session (JobqExecuteAsOwner): the way a SECURITY DEFINER function
 *	  would run them, with search_path pinned;
 *	- as the caller, for what row-level security must decide
 *	  (JobqExecuteAsCaller), search_path pinned as well;
 *	- prepared once and kept, for the statements a worker runs thousands
 *	  of times a second (JobqKeepPlan, JobqExecuteKept).
 *
 * IDENTIFICATION
 *		src/spi.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"

#include "jobq.h"

/*
 * Run one SQL statement on jobq's tables as their owner (the owner of
 * jobq.job), with search_path pinned to pg_catalog, the way a SECURITY
 * DEFINER function would: users may read the tables, only the API writes
 * them.  Connects to SPI and returns what SPI_execute_with_args returned;
 * the caller reads SPI_tuptable and calls SPI_finish.  The caller's
 * identity is back when this returns (an error restores it through the
 * abort).
 */
int
JobqExecuteAsOwner(const char *sql, int nargs, Oid *argtypes, Datum *values,
				   bool read_only)
{
	return JobqExecuteAsOwnerNulls(sql, nargs, argtypes, values, NULL, read_only);
}

/*
 * Run one statement through SPI with search_path pinned to pg_catalog,
 * pg_temp, as user (InvalidOid: the current user, whose row-level
 * security then applies).  Nothing in jobq's own statements resolves
 * through the caller's search_path, whatever the caller planted there
 * (an operator, a function, a type of the same name).
 */
static int
execute_pinned(const char *sql, int nargs, Oid *argtypes, Datum *values,
			   const char *nulls, bool read_only, Oid user)
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
	int			rc;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	if (OidIsValid(user))
		SetUserIdAndSecContext(user, save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute_with_args(sql, nargs, argtypes, values, nulls, read_only, 0);
	AtEOXact_GUC(true, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	return rc;
}

/* the same, with SPI's nulls ('n' for a null argument; NULL: none) */
int
JobqExecuteAsOwnerNulls(const char *sql, int nargs, Oid *argtypes, Datum *values,
						const char *nulls, bool read_only)
{
	return execute_pinned(sql, nargs, argtypes, values, nulls, read_only,
						  JobqSchemaRequire()->owner);
}

/*
 * Run one statement as the current user, for what row-level security must
 * decide (which jobs the caller sees), with search_path pinned as above.
 * Connects to SPI; the caller reads SPI_tuptable and calls SPI_finish.
 */
int
JobqExecuteAsCaller(const char *sql, int nargs, Oid *argtypes, Datum *values,
					bool read_only)
{
	return execute_pinned(sql, nargs, argtypes, values, NULL, read_only,
						  InvalidOid);
}

/*
 * Prepare a statement once and keep it for the life of the worker.
 */
SPIPlanPtr
JobqKeepPlan(SPIPlanPtr *plan, const char *sql, int nargs, Oid *argtypes)
{
	if (*plan == NULL)
	{
		/*
		 * A generic plan: these statements run thousands of times a second
		 * and their best plan does not depend on the parameter values, so
		 * planning them per execution (custom plans) would be pure cost.
		 */
		int			nestlevel = NewGUCNestLevel();
		SPIPlanPtr	p;

		/* names resolve in pg_catalog, whoever prepares it (see below) */
		(void) set_config_option("search_path", "pg_catalog, pg_temp",
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
								 true, 0, false);
		p = SPI_prepare_cursor(sql, nargs, argtypes, CURSOR_OPT_GENERIC_PLAN);
		AtEOXact_GUC(true, nestlevel);

		if (p == NULL)
			elog(ERROR, "SPI_prepare failed for jobq statement: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		*plan = p;
	}
	return *plan;
}

/*
 * The kept statement *plan of set, prepared if it is not: every plan of
 * the set is freed first when the schema changed since they were made
 * (ALTER EXTENSION jobq UPDATE, or DROP and CREATE EXTENSION), since a
 * statement may differ between versions and its tables may be new.
 */
SPIPlanPtr
JobqKeepPlanIn(JobqPlanSet *set, SPIPlanPtr *plan, const char *sql, int nargs,
			   Oid *argtypes)
{
	uint64		generation = JobqSchemaGet()->generation;
	int			i;

	if (set->generation != generation)
	{
		for (i = 0; i < set->nplans; i++)
			if (*set->plans[i] != NULL)
			{
				SPI_freeplan(*set->plans[i]);
				*set->plans[i] = NULL;
			}
		set->generation = generation;
	}
	if (*plan == NULL)
	{
		for (i = 0; i < set->nplans; i++)
			if (set->plans[i] == plan)
				break;
		if (i == set->nplans)
		{
			if (set->nplans >= JOBQ_PLAN_SET_SIZE)
				elog(ERROR, "too many kept jobq statements in one set");
			set->plans[set->nplans++] = plan;
		}
	}
	return JobqKeepPlan(plan, sql, nargs, argtypes);
}

/*
 * Execute a kept statement.  The planner runs inside, when the plan is
 * first built and whenever an invalidation makes it rebuild, and it must
 * never pick a sequential scan, a sort or a hash join for these: built
 * while the queue is empty (a fresh install, a drained queue), the generic
 * plan of the claim would otherwise be a sequential scan and a sort of the
 * whole table, kept while the queue grows to millions of jobs.  Hence
 * these planner settings, saved and restored around the execution (as
 * for a function's SET clause): the jobs that run next in the same
 * transaction are planned with the session's own.
 */
int
JobqExecuteKept(SPIPlanPtr plan, Datum *values, bool read_only)
{
	int			nestlevel = NewGUCNestLevel();
	int			rc;

	(void) set_config_option("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_sort", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_hashjoin", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("enable_mergejoin", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	rc = SPI_execute_plan(plan, values, NULL, read_only, 0);
	AtEOXact_GUC(true, nestlevel);
	return rc;
}


/*
 * Execute a kept statement as the owner of jobq's tables: for the writes
 * that a user's session makes through jobq's functions (the statement
 * names everything with its schema, so the search_path it was prepared
 * with resolves nothing).
 */
int
JobqExecuteKeptAsOwner(SPIPlanPtr plan, Datum *values)
{
	Oid			save_userid;
	int			save_sec_context;
	int			rc;

	int			nestlevel;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(JobqSchemaRequire()->owner,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);

	/*
	 * In a user's backend (jobq.claim() and the other calls of external
	 * executors, a retry recorded by jobq.fail()): a kept plan is analyzed
	 * again whenever search_path differs from the one it was prepared
	 * with, so it runs with jobq's own.
	 */
	nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	rc = JobqExecuteKept(plan, values, false);
	AtEOXact_GUC(true, nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	return rc;
}

/* a one-dimensional array of n values of type elemtype (nulls as given) */
Datum
JobqDatumArray(Datum *values, bool *nulls, int n, Oid elemtype)
{
	int			dims[1] = {n};
	int			lbs[1] = {1};
	int16		typlen;
	bool		typbyval;
	char		typalign;

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(values, nulls, 1, dims, lbs,
											  elemtype, typlen, typbyval,
											  typalign));
}

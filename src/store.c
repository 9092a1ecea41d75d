/*-------------------------------------------------------------------------
 *
 * store.c
 *		Direct writes to jobq's own tables.
 *
 * The hot paths write rows without an SQL statement: an enqueue inserts
 * into jobq.job, a chunk's finished jobs are deleted from it by their
 * tuple id and inserted into jobq.job_history in one multi-insert.  This
 * is how PostgreSQL writes its catalogs (and TimescaleDB its own): the
 * heap, then every index, as the executor's insert would, with no
 * executor start-up, no plan and no projection per statement.  Through
 * SPI, one enqueue cost about 35 us, and recording a chunk's outcomes was
 * the largest part of a worker's time.
 *
 * The direct path checks the table's constraints (NOT NULL and CHECK), as
 * the executor's insert would, so that they hold for every row whichever
 * way it was written.  What it does not do (permission checks, row-level
 * security, triggers) has nothing to do on these tables: they are the
 * extension's, users hold no privileges to write them, and the callers
 * build every column by name, checked against the table's definition when
 * the description is built.
 *
 * A JobqTable keeps what a write needs between calls: the relation's OID,
 * a copy of its tuple descriptor, its indexes with their IndexInfo (a
 * partial index's predicate is compiled once, into the table's EState).
 * A partial index WHERE col IS NOT NULL (jobq.job has three, for the rare
 * columns) is not even opened for rows whose col is null: the lock held
 * on the table keeps it from being dropped or rebuilt meanwhile, and an
 * enqueue opens two indexes instead of five.
 * A relcache invalidation of the table (a new index, ALTER TABLE, DROP
 * EXTENSION) discards it, and the next open builds it again; callers that
 * keep column numbers compare the generation.
 *
 * IDENTIFICATION
 *		src/store.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/syscache.h"
#include "catalog/pg_class.h"
#include "access/htup_details.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "jobq.h"

#define JOBQ_MAX_TABLES 4

static JobqTable *tables[JOBQ_MAX_TABLES];
static int	ntables = 0;
static bool callback_registered = false;

static void
table_invalidate(Datum arg, Oid relid)
{
	int			i;

	for (i = 0; i < ntables; i++)
		if (relid == InvalidOid || relid == tables[i]->relid)
		{
			tables[i]->valid = false;
			tables[i]->stale = true;
		}
}

/*
 * A column whose null makes a row fail the index's predicate (a partial
 * index WHERE col IS NOT NULL, alone or ANDed with more), or 0.
 */
static AttrNumber
null_skips_index(IndexInfo *ii)
{
	ListCell   *lc;

	foreach(lc, ii->ii_Predicate)
	{
		NullTest   *nt = (NullTest *) lfirst(lc);

		if (IsA(nt, NullTest) && nt->nulltesttype == IS_NOT_NULL &&
			!nt->argisrow && IsA(nt->arg, Var) &&
			((Var *) nt->arg)->varattno > 0)
			return ((Var *) nt->arg)->varattno;
	}
	return InvalidAttrNumber;
}

static void
table_build(JobqTable *t, Relation rel)
{
	MemoryContext old;
	List	   *indexids;
	ListCell   *lc;
	int			i;

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(table_invalidate, (Datum) 0);
		callback_registered = true;
	}
	if (t->cxt == NULL)
	{
		if (ntables >= JOBQ_MAX_TABLES)
			elog(ERROR, "too many jobq tables");
		tables[ntables++] = t;
		t->cxt = AllocSetContextCreate(CacheMemoryContext, "jobq table",
									   ALLOCSET_SMALL_SIZES);
	}
	else
		MemoryContextReset(t->cxt);
	/* an invalidation that arrives while the catalogs are read sets stale */
	t->valid = false;
	t->stale = false;
	t->relid = RelationGetRelid(rel);
	t->generation++;

	old = MemoryContextSwitchTo(t->cxt);
	/* with defaults: a column added later reads as its default in old rows */
	t->desc = CreateTupleDescCopyConstr(RelationGetDescr(rel));
	t->estate = CreateExecutorState();
	indexids = RelationGetIndexList(rel);
	t->nindexes = list_length(indexids);
	t->indexids = palloc(sizeof(Oid) * Max(t->nindexes, 1));
	t->indexinfo = palloc(sizeof(IndexInfo *) * Max(t->nindexes, 1));
	t->skip_attno = palloc(sizeof(AttrNumber) * Max(t->nindexes, 1));
	i = 0;
	foreach(lc, indexids)
	{
		Relation	index = index_open(lfirst_oid(lc), RowExclusiveLock);

		t->indexids[i] = RelationGetRelid(index);
		t->indexinfo[i] = BuildIndexInfo(index);
		t->skip_attno[i] = null_skips_index(t->indexinfo[i]);
		index_close(index, NoLock);
		i++;
	}
	/* the constraints, compiled into estate at the first insert */
	t->checks = NULL;
	if (t->desc->constr != NULL &&
		(t->desc->constr->has_not_null || t->desc->constr->num_check > 0))
	{
		t->checks = palloc0(sizeof(ResultRelInfo));
		InitResultRelInfo(t->checks, rel, 0, NULL, 0);
	}
	MemoryContextSwitchTo(old);
	t->valid = !t->stale;
}

/*
 * Open jobq.<t->relname> for writing (RowExclusiveLock, kept to the end
 * of the transaction) and make sure t describes it.
 */
Relation
JobqTableOpen(JobqTable *t)
{
	Oid			relid = JobqSchemaRelid(t->relname);
	Relation	rel;

	if (OidIsValid(relid))
	{
		/* the lock may have waited for a DROP and CREATE EXTENSION */
		rel = table_open(relid, RowExclusiveLock);
		if (JobqSchemaRelid(t->relname) == relid)
		{
			while (!t->valid || t->relid != relid)
				table_build(t, rel);
			return rel;
		}
		table_close(rel, RowExclusiveLock);
	}
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_TABLE),
			 errmsg("relation \"jobq.%s\" does not exist", t->relname),
			 errhint("Reinstall the extension with DROP EXTENSION jobq and CREATE EXTENSION jobq.")));
	return NULL;				/* keep compiler quiet */
}

/*
 * Column number of a column of t by name, or InvalidAttrNumber.  The
 * column must have type type (ANYENUMOID: any enum; InvalidOid: any).
 */
AttrNumber
JobqTableColumn(JobqTable *t, const char *name, Oid type, bool required)
{
	int			i;

	for (i = 0; i < t->desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(t->desc, i);

		if (att->attisdropped || strcmp(NameStr(att->attname), name) != 0)
			continue;
		if (type == ANYENUMOID ? !type_is_enum(att->atttypid) :
			OidIsValid(type) && att->atttypid != type)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("column \"%s\" of relation \"jobq.%s\" has an unexpected type",
							name, t->relname),
					 errhint("Install the jobq library that matches the extension's version.")));
		return att->attnum;
	}
	if (required)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("relation \"jobq.%s\" has no column \"%s\"",
						t->relname, name),
				 errhint("Install the jobq library that matches the extension's version.")));
	return InvalidAttrNumber;
}

/* check the NOT NULL and CHECK constraints of t for n rows */
static void
check_rows(JobqTable *t, Relation rel, TupleTableSlot **slots, int n)
{
	int			i;

	if (t->checks == NULL)
		return;
	t->checks->ri_RelationDesc = rel;
	for (i = 0; i < n; i++)
	{
		ExecConstraints(t->checks, slots[i], t->estate);
		ResetPerTupleExprContext(t->estate);
	}
}

/* does index i of t have a key that is one of columns (attribute numbers)? */
static bool
index_uses(JobqTable *t, int i, Bitmapset *columns)
{
	IndexInfo  *ii = t->indexinfo[i];
	int			k;

	if (ii->ii_Expressions != NIL)
		return true;			/* jobq's indexes have none; assume the worst */
	for (k = 0; k < ii->ii_NumIndexKeyAttrs; k++)
		if (bms_is_member(ii->ii_IndexAttrNumbers[k], columns))
			return true;
	return false;
}

/*
 * Insert the index entries of n new row versions, written to the heap of
 * rel and now at their slots' tts_tid, into every index of t they belong
 * to.  For new versions of updated rows, changed holds the columns that
 * the update changed, so that an index whose keys it left alone is told
 * (bottom-up deletion of the old versions' entries, as an UPDATE does);
 * NULL for new rows.
 */
static void
insert_index_entries(JobqTable *t, Relation rel, TupleTableSlot **slots, int n,
					 bool update, Bitmapset *changed)
{
	ResultRelInfo rri;
	Relation   *indexrels;
	IndexInfo **indexinfo;
	Relation   *passrels;
	IndexInfo **passinfo;
	int		   *used;
	int			nused = 0;
	int			pass;
	int			i,
				j;

	if (t->nindexes == 0)
		return;
	indexrels = palloc(sizeof(Relation) * t->nindexes);
	indexinfo = palloc(sizeof(IndexInfo *) * t->nindexes);
	used = palloc(sizeof(int) * t->nindexes);
	passrels = palloc(sizeof(Relation) * t->nindexes);
	passinfo = palloc(sizeof(IndexInfo *) * t->nindexes);
	for (i = 0; i < t->nindexes; i++)
	{
		if (t->skip_attno[i] != InvalidAttrNumber)
		{
			for (j = 0; j < n; j++)
				if (!slot_attisnull(slots[j], t->skip_attno[i]))
					break;
			if (j == n)
				continue;		/* no row goes into this partial index */
		}
		used[nused] = i;
		indexrels[nused] = index_open(t->indexids[i], RowExclusiveLock);
		indexinfo[nused++] = t->indexinfo[i];
	}
	/*
	 * ExecInsertIndexTuples() tells every index it is given that its keys
	 * are unchanged (it learns what changed from a range table, which
	 * these writes have none of), so the indexes of an update go in two
	 * passes: those whose keys it left as they were, then the others.
	 */
	for (pass = 0; pass < (update ? 2 : 1); pass++)
	{
		int			k = 0;

		MemSet(&rri, 0, sizeof(rri));
		InitResultRelInfo(&rri, rel, 0, NULL, 0);
		for (j = 0; j < nused; j++)
			if (!update || index_uses(t, used[j], changed) == (pass == 1))
			{
				passrels[k] = indexrels[j];
				passinfo[k++] = indexinfo[j];
			}
		if (k == 0)
			continue;
		rri.ri_NumIndices = k;
		rri.ri_IndexRelationDescs = passrels;
		rri.ri_IndexRelationInfo = passinfo;
		for (i = 0; i < n; i++)
		{
			(void) ExecInsertIndexTuples(&rri, slots[i], t->estate,
										 update && pass == 0, false, NULL, NIL);
			ResetPerTupleExprContext(t->estate);
		}
	}
	for (i = 0; i < nused; i++)
		index_close(indexrels[i], NoLock);
	pfree(indexrels);
	pfree(indexinfo);
	pfree(used);
	pfree(passrels);
	pfree(passinfo);
}

/*
 * Insert n rows, given as virtual slots of t's descriptor, into the heap
 * and every index of rel (opened by JobqTableOpen).
 */
void
JobqTableInsert(JobqTable *t, Relation rel, TupleTableSlot **slots, int n)
{
	CommandId	cid = GetCurrentCommandId(true);

	check_rows(t, rel, slots, n);
	if (n == 1)
		table_tuple_insert(rel, slots[0], cid, 0, NULL);
	else
		table_multi_insert(rel, slots, n, cid, 0, NULL);
	insert_index_entries(t, rel, slots, n, false, NULL);
}

/*
 * Replace the row version at tid of rel (opened by JobqTableOpen) with
 * slot, a virtual slot of t's descriptor, and give the new version its
 * index entries, as the executor's UPDATE would; changed holds the
 * attribute numbers of the columns whose values slot changes.  Unless wait, a row that
 * another transaction is changing or has locked is left as it is.  Returns
 * TM_Ok, or why the row was not changed (*tmfd tells more): it is locked
 * or being changed (TM_BeingModified, only unless wait), or it was updated
 * or deleted since the caller's snapshot.
 */
TM_Result
JobqTableUpdate(JobqTable *t, Relation rel, ItemPointer tid,
				TupleTableSlot *slot, Bitmapset *changed, bool wait,
				TM_FailureData *tmfd)
{
	LockTupleMode lockmode;
	bool		update_indexes;
	TM_Result	result;

	check_rows(t, rel, &slot, 1);
	slot->tts_tableOid = RelationGetRelid(rel);
	result = table_tuple_update(rel, tid, slot, GetCurrentCommandId(true),
								InvalidSnapshot, InvalidSnapshot, wait, tmfd,
								&lockmode, &update_indexes);
	if (result == TM_Ok && update_indexes)
		insert_index_entries(t, rel, &slot, 1, true, changed);
	return result;
}

/*
 * A virtual slot for a row of t, in CurrentMemoryContext, every column
 * null.  Its descriptor is t's copy, which is not reference counted: the
 * slot holds no resource and goes with its memory context.
 */
TupleTableSlot *
JobqTableSlot(JobqTable *t)
{
	TupleTableSlot *slot = MakeSingleTupleTableSlot(t->desc, &TTSOpsVirtual);
	int			i;

	for (i = 0; i < t->desc->natts; i++)
	{
		slot->tts_values[i] = (Datum) 0;
		slot->tts_isnull[i] = true;
	}
	return slot;
}

/*
 * Backend-local copies of small tables of jobq's (queue settings, role
 * limits), read again after a relcache invalidation of the table, which
 * the functions that change them send with their commit.  A copy is valid
 * only once read in full, and only if no invalidation came while it was
 * read: a read that fails (cancelled, timed out) must not leave an empty
 * copy behind.
 */
#define JOBQ_MAX_COPIES 4

static JobqTableCopy *copies[JOBQ_MAX_COPIES];
static int	ncopies = 0;

static void
copy_invalidate(Datum arg, Oid relid)
{
	int			i;

	for (i = 0; i < ncopies; i++)
		if (relid == InvalidOid || relid == copies[i]->relid)
		{
			copies[i]->valid = false;
			copies[i]->invalidations++;
		}
}

/*
 * Must c be read again?  If so, its memory context is emptied, its table
 * looked up (c->relid is InvalidOid if the extension has no such table:
 * then there is nothing to read, and it is looked up again next time),
 * and *seen notes the invalidations so far.
 */
static bool
copy_stale(JobqTableCopy *c, uint64 *seen)
{
	if (c->cxt == NULL)
	{
		if (ncopies == 0)
			CacheRegisterRelcacheCallback(copy_invalidate, (Datum) 0);
		if (ncopies >= JOBQ_MAX_COPIES)
			elog(ERROR, "too many jobq table copies");
		copies[ncopies++] = c;
		c->cxt = AllocSetContextCreate(TopMemoryContext, "jobq table copy",
									   ALLOCSET_SMALL_SIZES);
		MemoryContextSetIdentifier(c->cxt, c->relname);
	}
	if (c->valid)
		return false;
	MemoryContextReset(c->cxt);
	c->relid = JobqSchemaRelid(c->relname);
	*seen = c->invalidations;
	return true;
}

/*
 * The rows of copy c, *n of them: read again when stale with sql, which
 * runs as the tables' owner, each row made into an element of elemsize
 * bytes by fill, in the copy's memory.  None if the extension has no
 * such table (an older version).  Needs a transaction and an active
 * snapshot.
 */
void *
JobqTableCopyLoad(JobqTableCopy *c, const char *sql, Size elemsize,
				  JobqCopyFill fill, int *n)
{
	uint64		seen;

	if (copy_stale(c, &seen))
	{
		c->rows = NULL;
		c->nrows = 0;
		if (OidIsValid(c->relid))
		{
			char	   *rows;
			uint64		i;

			if (JobqExecuteAsOwner(sql, 0, NULL, NULL, false) != SPI_OK_SELECT)
				elog(ERROR, "could not read relation \"jobq.%s\"", c->relname);
			rows = MemoryContextAllocZero(c->cxt, elemsize * Max(SPI_processed, 1));
			for (i = 0; i < SPI_processed; i++)
				fill(rows + i * elemsize, SPI_tuptable->vals[i], SPI_tuptable->tupdesc);
			c->rows = rows;
			c->nrows = (int) SPI_processed;
			SPI_finish();
		}
		/* valid once read in full, with no invalidation meanwhile */
		c->valid = OidIsValid(c->relid) && seen == c->invalidations;
	}
	*n = c->nrows;
	return c->rows;
}

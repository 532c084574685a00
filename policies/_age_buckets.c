/* The compiled twin of policies/age_buckets.py: the same AgeBuckets class,
 * making the same decisions, with a victim search several times faster
 * (bench/bench_victim_cost.py measures it).
 *
 * Checkpoints sit in groups by (priority, kind, age bucket). Each group keeps
 * two indexed binary heaps of slot ids: by (weight, last use, key), whose top
 * is the group's least checkpoint, and by (last use, key), whose top is the
 * first to age into an older bucket. A slot knows its position in both, so a
 * checkpoint leaves its group in O(log n) with nothing left stale.
 *
 * Read policies/age_buckets.py first: it documents every method, and
 * tests/test_age_buckets.py holds both implementations to the same answers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

#define MAX_KINDS 8
#define MAX_BUCKETS 64

typedef struct {
    PyObject *key;           /* owned; NULL while the slot is free */
    double weight;
    double last_use;
    Py_ssize_t w_pos;        /* position in its group's by-weight heap */
    Py_ssize_t a_pos;        /* position in its group's by-age heap */
    int level, kind, bucket;
} Slot;

typedef struct {
    Py_ssize_t *by_weight, *by_age;   /* heaps of slot ids, `size` each */
    Py_ssize_t size, capacity;
} Group;

typedef struct {
    PyObject *priority;      /* owned */
    Py_ssize_t live;         /* checkpoints linked at this priority */
    Group *groups;           /* kinds * buckets */
} Level;

typedef struct {
    PyObject_HEAD
    int kinds, buckets;
    double age_base;
    double starts[MAX_BUCKETS + 1];
    Slot *slots;
    Py_ssize_t n_slots, cap_slots;
    Py_ssize_t *free_ids;
    Py_ssize_t n_free;
    PyObject *where;         /* dict: key -> slot id */
    Level *levels;
    int n_levels, cap_levels;
    Py_ssize_t idle[MAX_KINDS][MAX_BUCKETS];
    int top[MAX_KINDS];
    PyObject *tables[MAX_KINDS];          /* the table last returned per kind (owned) */
    double values[MAX_KINDS][MAX_BUCKETS]; /* ... and its values */
    PyObject *terms;                      /* the terms densities() last read (owned) */
    double term_values[MAX_BUCKETS][4];   /* ... as (bucket, width, middle, prior) */
} AgeBuckets;

/* ------------------------------------------------------------ ordering */

static int
key_less(PyObject *a, PyObject *b)
{
    if (PyUnicode_CheckExact(a) && PyUnicode_CheckExact(b))
        return PyUnicode_Compare(a, b) < 0;
    int r = PyObject_RichCompareBool(a, b, Py_LT);
    if (r < 0) {
        PyErr_Clear();
        return 0;
    }
    return r;
}

/* (weight, last use, key), compared as that tuple would be */
static int
weight_less(const AgeBuckets *s, Py_ssize_t a, Py_ssize_t b)
{
    const Slot *x = &s->slots[a], *y = &s->slots[b];
    if (x->weight != y->weight)
        return x->weight < y->weight;
    if (x->last_use != y->last_use)
        return x->last_use < y->last_use;
    return key_less(x->key, y->key);
}

/* (last use, key) */
static int
age_less(const AgeBuckets *s, Py_ssize_t a, Py_ssize_t b)
{
    const Slot *x = &s->slots[a], *y = &s->slots[b];
    if (x->last_use != y->last_use)
        return x->last_use < y->last_use;
    return key_less(x->key, y->key);
}

/* --------------------------------------------------------- indexed heaps */

typedef int (*less_fn)(const AgeBuckets *, Py_ssize_t, Py_ssize_t);

static inline void
put(AgeBuckets *s, Py_ssize_t *heap, Py_ssize_t i, Py_ssize_t id, int by_age)
{
    heap[i] = id;
    if (by_age)
        s->slots[id].a_pos = i;
    else
        s->slots[id].w_pos = i;
}

static void
sift_up(AgeBuckets *s, Py_ssize_t *heap, Py_ssize_t i, int by_age, less_fn less)
{
    Py_ssize_t id = heap[i];
    while (i > 0) {
        Py_ssize_t parent = (i - 1) >> 1;
        if (!less(s, id, heap[parent]))
            break;
        put(s, heap, i, heap[parent], by_age);
        i = parent;
    }
    put(s, heap, i, id, by_age);
}

static void
sift_down(AgeBuckets *s, Py_ssize_t *heap, Py_ssize_t size, Py_ssize_t i, int by_age, less_fn less)
{
    Py_ssize_t id = heap[i];
    for (;;) {
        Py_ssize_t child = 2 * i + 1;
        if (child >= size)
            break;
        if (child + 1 < size && less(s, heap[child + 1], heap[child]))
            child++;
        if (!less(s, heap[child], id))
            break;
        put(s, heap, i, heap[child], by_age);
        i = child;
    }
    put(s, heap, i, id, by_age);
}

/* take the entry at `pos` out of a heap that held `size + 1` entries */
static void
heap_remove(AgeBuckets *s, Py_ssize_t *heap, Py_ssize_t size, Py_ssize_t pos, int by_age, less_fn less)
{
    if (pos == size)
        return;
    put(s, heap, pos, heap[size], by_age);
    if (pos > 0 && less(s, heap[pos], heap[(pos - 1) >> 1]))
        sift_up(s, heap, pos, by_age, less);
    else
        sift_down(s, heap, size, pos, by_age, less);
}

/* resize the array at *array to `count` items of `size` bytes; left as it was on failure */
static int
resize(void *array, Py_ssize_t count, size_t size)
{
    void *resized = PyMem_Realloc(*(void **)array, (size_t)count * size);
    if (resized == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *(void **)array = resized;
    return 0;
}

static int
group_push(AgeBuckets *s, Group *g, Py_ssize_t id)
{
    if (g->size == g->capacity) {
        Py_ssize_t capacity = g->capacity ? 2 * g->capacity : 8;
        if (resize(&g->by_weight, capacity, sizeof(Py_ssize_t)) < 0
            || resize(&g->by_age, capacity, sizeof(Py_ssize_t)) < 0)
            return -1;
        g->capacity = capacity;
    }
    Py_ssize_t i = g->size++;
    put(s, g->by_weight, i, id, 0);
    sift_up(s, g->by_weight, i, 0, weight_less);
    put(s, g->by_age, i, id, 1);
    sift_up(s, g->by_age, i, 1, age_less);
    return 0;
}

static void
group_remove(AgeBuckets *s, Group *g, Py_ssize_t id)
{
    Slot *slot = &s->slots[id];
    Py_ssize_t w_pos = slot->w_pos, a_pos = slot->a_pos;
    g->size--;
    heap_remove(s, g->by_weight, g->size, w_pos, 0, weight_less);
    heap_remove(s, g->by_age, g->size, a_pos, 1, age_less);
}

static inline Group *
group_of(AgeBuckets *s, int level, int kind, int bucket)
{
    return &s->levels[level].groups[kind * s->buckets + bucket];
}

/* ------------------------------------------------------------- helpers */

static int
level_for(AgeBuckets *s, PyObject *priority)
{
    for (int i = 0; i < s->n_levels; i++) {
        int same = PyObject_RichCompareBool(s->levels[i].priority, priority, Py_EQ);
        if (same < 0)
            return -1;
        if (same)
            return i;
    }
    if (s->n_levels == s->cap_levels) {
        int capacity = s->cap_levels ? 2 * s->cap_levels : 2;
        if (resize(&s->levels, capacity, sizeof(Level)) < 0)
            return -1;
        s->cap_levels = capacity;
    }
    Group *groups = PyMem_Calloc((size_t)s->kinds * s->buckets, sizeof(Group));
    if (groups == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Level *level = &s->levels[s->n_levels];
    Py_INCREF(priority);
    level->priority = priority;
    level->live = 0;
    level->groups = groups;
    return s->n_levels++;
}

static Py_ssize_t
slot_alloc(AgeBuckets *s)
{
    if (s->n_free)
        return s->free_ids[--s->n_free];
    if (s->n_slots == s->cap_slots) {
        Py_ssize_t capacity = s->cap_slots ? 2 * s->cap_slots : 64;
        if (resize(&s->slots, capacity, sizeof(Slot)) < 0 || resize(&s->free_ids, capacity, sizeof(Py_ssize_t)) < 0)
            return -1;
        s->cap_slots = capacity;
    }
    return s->n_slots++;
}

/* the slot id of `key`, -1 if it is not linked, -2 on error */
static int
not_ready(AgeBuckets *s)
{
    if (s->where != NULL)
        return 0;
    PyErr_SetString(PyExc_RuntimeError, "AgeBuckets.__init__ was not called");
    return 1;
}

static Py_ssize_t
slot_of(AgeBuckets *s, PyObject *key)
{
    if (not_ready(s))
        return -2;
    PyObject *id = PyDict_GetItemWithError(s->where, key);
    if (id == NULL)
        return PyErr_Occurred() ? -2 : -1;
    return PyLong_AsSsize_t(id);
}

static void
count_in(AgeBuckets *s, int kind, int bucket)
{
    s->idle[kind][bucket]++;
    if (bucket > s->top[kind])
        s->top[kind] = bucket;
}

/* ------------------------------------------------------------- methods */

static int
AgeBuckets_init(AgeBuckets *self, PyObject *args, PyObject *kwds)
{
    static char *names[] = {"kinds", "buckets", "age_base", NULL};
    int kinds, buckets;
    double age_base;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "$iid", names, &kinds, &buckets, &age_base))
        return -1;
    if (kinds < 1 || kinds > MAX_KINDS) {
        PyErr_Format(PyExc_ValueError, "kinds must be in [1, %d], got %d", MAX_KINDS, kinds);
        return -1;
    }
    if (buckets < 1 || buckets > MAX_BUCKETS) {
        PyErr_Format(PyExc_ValueError, "buckets must be in [1, %d], got %d", MAX_BUCKETS, buckets);
        return -1;
    }
    if (!(age_base > 0)) {
        PyErr_SetString(PyExc_ValueError, "age_base must be > 0");
        return -1;
    }
    if (self->where != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "AgeBuckets is initialised once");
        return -1;
    }
    self->where = PyDict_New();
    if (self->where == NULL)
        return -1;
    self->kinds = kinds;
    self->buckets = buckets;
    self->age_base = age_base;
    for (int b = 0; b <= buckets; b++)
        self->starts[b] = age_base * (ldexp(1.0, b) - 1.0);  /* age_base * (2**b - 1) */
    for (int k = 0; k < MAX_KINDS; k++)
        self->top[k] = -1;
    return 0;
}

static void
AgeBuckets_dealloc(AgeBuckets *self)
{
    for (Py_ssize_t i = 0; i < self->n_slots; i++)
        Py_XDECREF(self->slots[i].key);
    for (int i = 0; i < self->n_levels; i++) {
        Level *level = &self->levels[i];
        for (int g = 0; g < self->kinds * self->buckets; g++) {
            PyMem_Free(level->groups[g].by_weight);
            PyMem_Free(level->groups[g].by_age);
        }
        PyMem_Free(level->groups);
        Py_DECREF(level->priority);
    }
    for (int k = 0; k < MAX_KINDS; k++)
        Py_XDECREF(self->tables[k]);
    Py_XDECREF(self->terms);
    PyMem_Free(self->levels);
    PyMem_Free(self->slots);
    PyMem_Free(self->free_ids);
    Py_XDECREF(self->where);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
AgeBuckets_link(AgeBuckets *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError,
                     "link(key, priority, kind, bucket, weight, last_use) takes 6 arguments, got %zd", nargs);
        return NULL;
    }
    if (not_ready(self))
        return NULL;
    PyObject *key = args[0], *priority = args[1];
    long kind = PyLong_AsLong(args[2]), bucket = PyLong_AsLong(args[3]);
    double weight = PyFloat_AsDouble(args[4]), last_use = PyFloat_AsDouble(args[5]);
    if (PyErr_Occurred())
        return NULL;
    if (kind < 0 || kind >= self->kinds) {
        PyErr_Format(PyExc_ValueError, "kind must be in [0, %d), got %ld", self->kinds, kind);
        return NULL;
    }
    if (bucket < 0 || bucket >= self->buckets) {
        PyErr_Format(PyExc_ValueError, "bucket must be in [0, %d), got %ld", self->buckets, bucket);
        return NULL;
    }
    Py_ssize_t found = slot_of(self, key);
    if (found == -2)
        return NULL;
    if (found >= 0) {
        PyErr_Format(PyExc_ValueError, "%R is already linked", key);
        return NULL;
    }
    int level = level_for(self, priority);
    if (level < 0)
        return NULL;
    Py_ssize_t id = slot_alloc(self);
    if (id < 0)
        return NULL;
    PyObject *number = PyLong_FromSsize_t(id);
    if (number == NULL || PyDict_SetItem(self->where, key, number) < 0) {
        Py_XDECREF(number);
        self->free_ids[self->n_free++] = id;
        return NULL;
    }
    Py_DECREF(number);
    Slot *slot = &self->slots[id];
    Py_INCREF(key);
    slot->key = key;
    slot->weight = weight;
    slot->last_use = last_use;
    slot->level = level;
    slot->kind = (int)kind;
    slot->bucket = (int)bucket;
    if (group_push(self, group_of(self, level, (int)kind, (int)bucket), id) < 0) {
        PyDict_DelItem(self->where, key);
        Py_CLEAR(slot->key);
        self->free_ids[self->n_free++] = id;
        return NULL;
    }
    self->levels[level].live++;
    count_in(self, (int)kind, (int)bucket);
    Py_RETURN_NONE;
}

static PyObject *
AgeBuckets_unlink(AgeBuckets *self, PyObject *key)
{
    Py_ssize_t id = slot_of(self, key);
    if (id == -2)
        return NULL;
    if (id < 0)
        Py_RETURN_FALSE;
    Slot *slot = &self->slots[id];
    group_remove(self, group_of(self, slot->level, slot->kind, slot->bucket), id);
    self->idle[slot->kind][slot->bucket]--;
    self->levels[slot->level].live--;
    if (PyDict_DelItem(self->where, key) < 0)
        return NULL;
    Py_CLEAR(slot->key);
    self->free_ids[self->n_free++] = id;
    Py_RETURN_TRUE;
}

/* a new list of `count` Python ints */
static PyObject *
int_list(const Py_ssize_t *values, int count)
{
    PyObject *out = PyList_New(count);
    if (out == NULL)
        return NULL;
    for (int i = 0; i < count; i++) {
        PyObject *n = PyLong_FromSsize_t(values[i]);
        if (n == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, n);
    }
    return out;
}

/* read a kind argument into *kind; -1 (an exception set) if it is not one */
static int
kind_arg(AgeBuckets *self, PyObject *arg, long *kind)
{
    *kind = PyLong_AsLong(arg);
    if (*kind == -1 && PyErr_Occurred())
        return -1;
    if (*kind < 0 || *kind >= self->kinds) {
        PyErr_Format(PyExc_ValueError, "kind must be in [0, %d), got %ld", self->kinds, *kind);
        return -1;
    }
    return 0;
}

static PyObject *
AgeBuckets_age(AgeBuckets *self, PyObject *arg)
{
    double now = PyFloat_AsDouble(arg);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    Py_ssize_t moved[MAX_KINDS] = {0};
    int any = 0, last = self->buckets - 1;
    for (int level = 0; level < self->n_levels; level++) {
        if (!self->levels[level].live)
            continue;
        for (int kind = 0; kind < self->kinds; kind++) {
            /* oldest bucket first: a checkpoint moved up is not looked at again */
            for (int b = last - 1; b >= 0; b--) {
                Group *g = group_of(self, level, kind, b);
                double cutoff = now - self->starts[b + 1];
                while (g->size && self->slots[g->by_age[0]].last_use <= cutoff) {
                    Py_ssize_t id = g->by_age[0];
                    Slot *slot = &self->slots[id];
                    double exact = floor(log2(1.0 + (now - slot->last_use) / self->age_base));
                    int to = exact >= last ? last : (int)exact;
                    if (to < b + 1)
                        to = b + 1;
                    group_remove(self, g, id);
                    slot->bucket = to;
                    if (group_push(self, group_of(self, level, kind, to), id) < 0)
                        return NULL;
                    self->idle[kind][b]--;
                    count_in(self, kind, to);
                    moved[kind]++;
                    any = 1;
                }
            }
        }
    }
    if (!any)
        Py_RETURN_NONE;
    PyObject *counts = int_list(moved, self->kinds);
    if (counts == NULL)
        return NULL;
    PyObject *out = PyList_AsTuple(counts);
    Py_DECREF(counts);
    return out;
}

/* the values of table_of(kind), converted once per table object */
static double *
table_values(AgeBuckets *self, PyObject *table_of, int kind)
{
    PyObject *index = PyLong_FromLong(kind);
    if (index == NULL)
        return NULL;
    PyObject *table = PyObject_CallOneArg(table_of, index);
    Py_DECREF(index);
    if (table == NULL)
        return NULL;
    if (table == self->tables[kind]) {
        Py_DECREF(table);
        return self->values[kind];
    }
    PyObject *seq = PySequence_Fast(table, "table_of(kind) must return a sequence of floats");
    if (seq == NULL) {
        Py_DECREF(table);
        return NULL;
    }
    if (PySequence_Fast_GET_SIZE(seq) < self->buckets) {
        PyErr_Format(PyExc_ValueError, "table_of(%d) returned %zd values for %d buckets",
                     kind, PySequence_Fast_GET_SIZE(seq), self->buckets);
        Py_DECREF(seq);
        Py_DECREF(table);
        return NULL;
    }
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (int b = 0; b < self->buckets; b++) {
        double v = PyFloat_AsDouble(items[b]);
        if (v == -1.0 && PyErr_Occurred()) {
            Py_DECREF(seq);
            Py_DECREF(table);
            Py_CLEAR(self->tables[kind]);
            return NULL;
        }
        self->values[kind][b] = v;
    }
    Py_DECREF(seq);
    Py_XSETREF(self->tables[kind], table);
    return self->values[kind];
}

static PyObject *
AgeBuckets_victim(AgeBuckets *self, PyObject *table_of)
{
    int lowest = -1;
    for (int i = 0; i < self->n_levels; i++) {
        if (!self->levels[i].live)
            continue;
        if (lowest >= 0) {
            int less = PyObject_RichCompareBool(self->levels[i].priority, self->levels[lowest].priority, Py_LT);
            if (less < 0)
                return NULL;
            if (!less)
                continue;
        }
        lowest = i;
    }
    if (lowest < 0)
        Py_RETURN_NONE;
    double best_rank = INFINITY, best_use = INFINITY;
    Py_ssize_t best = -1;
    for (int kind = 0; kind < self->kinds; kind++) {
        const double *table = NULL;
        for (int b = 0; b < self->buckets; b++) {
            if (!group_of(self, lowest, kind, b)->size)
                continue;
            /* (table_of runs Python code: pointers into the index are taken after it) */
            if (table == NULL && (table = table_values(self, table_of, kind)) == NULL)
                return NULL;
            Group *g = group_of(self, lowest, kind, b);
            if (!g->size)
                continue;
            const Slot *slot = &self->slots[g->by_weight[0]];
            double rank = table[b] * slot->weight;
            if (rank < best_rank || best < 0
                || (rank == best_rank
                    && (slot->last_use < best_use
                        || (slot->last_use == best_use && key_less(slot->key, self->slots[best].key))))) {
                best_rank = rank;
                best_use = slot->last_use;
                best = g->by_weight[0];
            }
        }
    }
    if (best < 0 || self->slots[best].key == NULL)  /* (emptied by table_of) */
        Py_RETURN_NONE;
    return Py_NewRef(self->slots[best].key);
}

static inline double
as_double(PyObject *value)
{
    return PyFloat_CheckExact(value) ? PyFloat_AS_DOUBLE(value) : PyFloat_AsDouble(value);
}

/* read terms: a sequence of (bucket, width, middle, prior), kept while it is the same object */
static int
read_terms(AgeBuckets *self, PyObject *terms)
{
    if (terms == self->terms)
        return 0;
    PyObject *seq = PySequence_Fast(terms, "terms must be a sequence of (bucket, width, middle, prior)");
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n != self->buckets) {
        PyErr_Format(PyExc_ValueError, "terms has %zd entries for %d buckets", n, self->buckets);
        Py_DECREF(seq);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *term = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyTuple_Check(term) || PyTuple_GET_SIZE(term) != 4) {
            PyErr_SetString(PyExc_ValueError, "each term must be a (bucket, width, middle, prior) tuple");
            Py_DECREF(seq);
            return -1;
        }
        long b = PyLong_AsLong(PyTuple_GET_ITEM(term, 0));
        if (b == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        if (b < 0 || b >= self->buckets) {
            PyErr_Format(PyExc_ValueError, "a term's bucket must be in [0, %d), got %ld", self->buckets, b);
            Py_DECREF(seq);
            return -1;
        }
        self->term_values[i][0] = (double)b;
        for (int j = 1; j < 4; j++) {
            double v = as_double(PyTuple_GET_ITEM(term, j));
            if (v == -1.0 && PyErr_Occurred()) {
                Py_DECREF(seq);
                return -1;
            }
            self->term_values[i][j] = v;
        }
    }
    Py_DECREF(seq);
    Py_INCREF(terms);
    Py_XSETREF(self->terms, terms);
    return 0;
}

static int
read_doubles(PyObject *values, const char *name, int count, double *out)
{
    PyObject *seq = PySequence_Fast(values, name);
    if (seq == NULL)
        return -1;
    if (PySequence_Fast_GET_SIZE(seq) < count) {
        PyErr_Format(PyExc_ValueError, "%s has %zd values for %d buckets", name, PySequence_Fast_GET_SIZE(seq), count);
        Py_DECREF(seq);
        return -1;
    }
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (int i = 0; i < count; i++) {
        double v = as_double(items[i]);
        if (v == -1.0 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        out[i] = v;
    }
    Py_DECREF(seq);
    return 0;
}

static PyObject *
AgeBuckets_densities(AgeBuckets *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError,
                     "densities(hits, ends, kind, top, terms, empty) takes 6 arguments, got %zd", nargs);
        return NULL;
    }
    int buckets = self->buckets;
    double hits[MAX_BUCKETS], ends[MAX_BUCKETS], out[MAX_BUCKETS];
    if (read_doubles(args[0], "hits", buckets, hits) < 0 || read_doubles(args[1], "ends", buckets, ends) < 0
        || read_doubles(args[5], "empty", buckets, out) < 0 || read_terms(self, args[4]) < 0)
        return NULL;
    long kind = -1;
    if (args[2] != Py_None) {
        kind = PyLong_AsLong(args[2]);
        if (kind == -1 && PyErr_Occurred())
            return NULL;
        if (kind < 0 || kind >= self->kinds) {
            PyErr_Format(PyExc_ValueError, "kind must be None or in [0, %d), got %ld", self->kinds, kind);
            return NULL;
        }
    }
    long top = PyLong_AsLong(args[3]);
    if (top == -1 && PyErr_Occurred())
        return NULL;
    if (top < -1 || top >= buckets) {
        PyErr_Format(PyExc_ValueError, "top must be in [-1, %d), got %ld", buckets, top);
        return NULL;
    }
    /* the same operations, in the same order, as AgeBuckets.densities in age_buckets.py
       (built with -ffp-contract=off: no fused multiply-adds, so every rounding agrees) */
    double hit_sum = 0.0, later_ends = 0.0, later_time = 0.0;
    for (Py_ssize_t i = buckets - 1 - top; i < buckets; i++) {
        const double *term = self->term_values[i];
        int b = (int)term[0];
        double width = term[1], mid = term[2], prior = term[3];
        hit_sum += hits[b];
        double e = kind < 0 ? ends[b] + 0.0 : ends[b] + (double)self->idle[kind][b];
        out[b] = (hit_sum + prior) / ((later_time - mid * later_ends) + e * width / 2 + width);
        later_ends += e;
        later_time += e * mid;
    }
    PyObject *table = PyList_New(buckets);
    if (table == NULL)
        return NULL;
    for (int b = 0; b < buckets; b++) {
        PyObject *v = PyFloat_FromDouble(out[b]);
        if (v == NULL) {
            Py_DECREF(table);
            return NULL;
        }
        PyList_SET_ITEM(table, b, v);
    }
    return Py_BuildValue("(Nd)", table, later_ends);
}

static PyObject *
AgeBuckets_idle(AgeBuckets *self, PyObject *arg)
{
    long kind;
    if (kind_arg(self, arg, &kind) < 0)
        return NULL;
    return int_list(self->idle[kind], self->buckets);
}

static PyObject *
AgeBuckets_top(AgeBuckets *self, PyObject *arg)
{
    long kind;
    if (kind_arg(self, arg, &kind) < 0)
        return NULL;
    return PyLong_FromLong(self->top[kind]);
}

static PyObject *
AgeBuckets_entry(AgeBuckets *self, PyObject *key)
{
    Py_ssize_t id = slot_of(self, key);
    if (id == -2)
        return NULL;
    if (id < 0)
        Py_RETURN_NONE;
    Slot *slot = &self->slots[id];
    return Py_BuildValue("(Oiidd)", self->levels[slot->level].priority, slot->kind, slot->bucket,
                         slot->weight, slot->last_use);
}

static PyObject *
AgeBuckets_keys(AgeBuckets *self, PyObject *Py_UNUSED(ignored))
{
    if (not_ready(self))
        return NULL;
    return PyDict_Keys(self->where);
}

static int
fail_check(const char *what)
{
    PyErr_Format(PyExc_AssertionError, "AgeBuckets: %s", what);
    return -1;
}

static PyObject *
AgeBuckets_check(AgeBuckets *self, PyObject *Py_UNUSED(ignored))
{
    if (not_ready(self))
        return NULL;
    Py_ssize_t counted = 0;
    Py_ssize_t idle[MAX_KINDS][MAX_BUCKETS] = {{0}};
    for (int level = 0; level < self->n_levels; level++) {
        Py_ssize_t live = 0;
        for (int kind = 0; kind < self->kinds; kind++) {
            for (int b = 0; b < self->buckets; b++) {
                Group *g = group_of(self, level, kind, b);
                for (Py_ssize_t i = 0; i < g->size; i++) {
                    Slot *slot = &self->slots[g->by_weight[i]];
                    if (slot->key == NULL || slot->level != level || slot->kind != kind || slot->bucket != b)
                        return fail_check("a slot sits in another group's heap"), NULL;
                    if (slot->w_pos != i || self->slots[g->by_age[slot->a_pos]].key != slot->key)
                        return fail_check("a slot's heap positions are wrong"), NULL;
                    if (i > 0 && weight_less(self, g->by_weight[i], g->by_weight[(i - 1) >> 1]))
                        return fail_check("the by-weight heap is out of order"), NULL;
                    if (i > 0 && age_less(self, g->by_age[i], g->by_age[(i - 1) >> 1]))
                        return fail_check("the by-age heap is out of order"), NULL;
                    if (b > self->top[kind])
                        return fail_check("a checkpoint sits above its kind's top bucket"), NULL;
                }
                live += g->size;
                idle[kind][b] += g->size;
            }
        }
        if (live != self->levels[level].live)
            return fail_check("a priority's live count is wrong"), NULL;
        counted += live;
    }
    if (counted != PyDict_GET_SIZE(self->where))
        return fail_check("the linked count is wrong"), NULL;
    for (int kind = 0; kind < self->kinds; kind++)
        for (int b = 0; b < self->buckets; b++)
            if (idle[kind][b] != self->idle[kind][b])
                return fail_check("an idle count is wrong"), NULL;
    Py_RETURN_NONE;
}

static Py_ssize_t
AgeBuckets_len(AgeBuckets *self)
{
    return self->where == NULL ? 0 : PyDict_GET_SIZE(self->where);
}

static int
AgeBuckets_contains(AgeBuckets *self, PyObject *key)
{
    if (not_ready(self))
        return -1;
    return PyDict_Contains(self->where, key);
}

static PyMethodDef AgeBuckets_methods[] = {
    {"link", (PyCFunction)(void (*)(void))AgeBuckets_link, METH_FASTCALL,
     "link(key, priority, kind, bucket, weight, last_use): put an unlinked key in its group. O(log n)."},
    {"unlink", (PyCFunction)AgeBuckets_unlink, METH_O,
     "unlink(key) -> bool: take key out of its group; False if it was not linked. O(log n)."},
    {"age", (PyCFunction)AgeBuckets_age, METH_O,
     "age(now) -> moves per kind, or None: move checkpoints whose idle time crossed into an older bucket."},
    {"victim", (PyCFunction)AgeBuckets_victim, METH_O,
     "victim(table_of) -> key or None: the least table_of(kind)[bucket] * weight at the lowest priority."},
    {"densities", (PyCFunction)(void (*)(void))AgeBuckets_densities, METH_FASTCALL,
     "densities(hits, ends, kind, top, terms, empty) -> (hit density per bucket, spells counted)."},
    {"idle", (PyCFunction)AgeBuckets_idle, METH_O, "idle(kind) -> linked checkpoints per bucket."},
    {"top", (PyCFunction)AgeBuckets_top, METH_O, "top(kind) -> the highest bucket a checkpoint of kind entered."},
    {"entry", (PyCFunction)AgeBuckets_entry, METH_O,
     "entry(key) -> (priority, kind, bucket, weight, last_use), or None."},
    {"keys", (PyCFunction)AgeBuckets_keys, METH_NOARGS, "keys() -> the linked keys."},
    {"check", (PyCFunction)AgeBuckets_check, METH_NOARGS, "check(): raise AssertionError on a broken invariant."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods AgeBuckets_as_sequence = {
    .sq_length = (lenfunc)AgeBuckets_len,
    .sq_contains = (objobjproc)AgeBuckets_contains,
};

static PyTypeObject AgeBucketsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "policies._age_buckets.AgeBuckets",
    .tp_doc = "Checkpoints grouped by priority, kind and age bucket (see policies/age_buckets.py).",
    .tp_basicsize = sizeof(AgeBuckets),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)AgeBuckets_init,
    .tp_dealloc = (destructor)AgeBuckets_dealloc,
    .tp_methods = AgeBuckets_methods,
    .tp_as_sequence = &AgeBuckets_as_sequence,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "policies._age_buckets",
    .m_doc = "The compiled AgeBuckets of the prefix-chain policy (see policies/age_buckets.py).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__age_buckets(void)
{
    if (PyType_Ready(&AgeBucketsType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "AgeBuckets", (PyObject *)&AgeBucketsType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

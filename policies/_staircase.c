/* The compiled twin of policies/staircase.py: the same Staircase class (the
 * Pareto staircase of (r, e) points behind marconi's victim), giving the same
 * answers, with its upkeep and its least score in C.
 *
 * Points live in arrays by position, appended in r order, with a hole where
 * one left; the staircase is the sorted array of the positions whose e is no
 * larger than every e before them. The minimum of e per block of 64 positions
 * (a lower bound: a hole leaves it) finds the next step after a step leaves.
 * The largest e comes from a max-heap of (e, position), lazily: an entry
 * counts while its position holds a point of that e.
 *
 * Read policies/staircase.py first: it documents every method, and
 * tests/test_staircase.py holds both implementations to the same answers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>

#define BLOCK 64
#define HOLE INFINITY   /* e of an empty position: above every threshold a search uses */
#define TOP DBL_MAX     /* the threshold standing for "no step before" */

typedef struct {
    PyObject_HEAD
    Py_ssize_t n, cap;            /* positions used (points and holes); allocated */
    double *r, *e;
    PyObject **keys;              /* owned; NULL at a hole */
    double *block_min;            /* cap / BLOCK lower bounds of e */
    Py_ssize_t *steps;
    Py_ssize_t n_steps, cap_steps;
    PyObject *pos;                /* dict: key -> position */
    double *heap_e;               /* max-heap of (e, position), stale entries too */
    Py_ssize_t *heap_p;
    Py_ssize_t heap_n, heap_cap;
    double last_r;
} Staircase;

static Py_ssize_t
live(const Staircase *s)
{
    return s->pos == NULL ? 0 : PyDict_GET_SIZE(s->pos);
}

static int
resize(void **array, Py_ssize_t count, size_t item)
{
    void *grown = PyMem_Realloc(*array, (size_t)(count > 0 ? count : 1) * item);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *array = grown;
    return 0;
}

static int
key_less(PyObject *a, PyObject *b)
{
    if (PyUnicode_CheckExact(a) && PyUnicode_CheckExact(b))
        return PyUnicode_Compare(a, b) < 0;
    int less = PyObject_RichCompareBool(a, b, Py_LT);
    return less;   /* -1 with an exception set when they do not compare */
}

/* ------------------------------------------------------------ the heap of e */

static int
heap_push(Staircase *s, double e, Py_ssize_t p)
{
    if (s->heap_n == s->heap_cap) {
        Py_ssize_t cap = s->heap_cap ? 2 * s->heap_cap : 256;
        if (resize((void **)&s->heap_e, cap, sizeof(double)) < 0
                || resize((void **)&s->heap_p, cap, sizeof(Py_ssize_t)) < 0)
            return -1;
        s->heap_cap = cap;
    }
    Py_ssize_t i = s->heap_n++;
    while (i > 0) {
        Py_ssize_t parent = (i - 1) / 2;
        if (s->heap_e[parent] >= e)
            break;
        s->heap_e[i] = s->heap_e[parent];
        s->heap_p[i] = s->heap_p[parent];
        i = parent;
    }
    s->heap_e[i] = e;
    s->heap_p[i] = p;
    return 0;
}

static void
heap_sift_down(Staircase *s, Py_ssize_t i)
{
    double e = s->heap_e[i];
    Py_ssize_t p = s->heap_p[i], n = s->heap_n;
    for (;;) {
        Py_ssize_t child = 2 * i + 1;
        if (child >= n)
            break;
        if (child + 1 < n && s->heap_e[child + 1] > s->heap_e[child])
            child++;
        if (s->heap_e[child] <= e)
            break;
        s->heap_e[i] = s->heap_e[child];
        s->heap_p[i] = s->heap_p[child];
        i = child;
    }
    s->heap_e[i] = e;
    s->heap_p[i] = p;
}

static int
heap_current(const Staircase *s, Py_ssize_t i)
{
    Py_ssize_t p = s->heap_p[i];
    return p < s->n && s->keys[p] != NULL && s->e[p] == s->heap_e[i];
}

/* the heap again from the points alone: O(n) */
static void
heap_rebuild(Staircase *s)
{
    Py_ssize_t k = 0;
    for (Py_ssize_t p = 0; p < s->n; p++)
        if (s->keys[p] != NULL) {
            s->heap_e[k] = s->e[p];
            s->heap_p[k] = p;
            k++;
        }
    s->heap_n = k;
    for (Py_ssize_t i = k / 2 - 1; i >= 0; i--)
        heap_sift_down(s, i);
}

/* note a point's e; stale entries are dropped once they are most of the heap */
static int
remember(Staircase *s, double e, Py_ssize_t p)
{
    if (heap_push(s, e, p) < 0)
        return -1;
    if (s->heap_n > 2 * live(s) + 1024)
        heap_rebuild(s);
    return 0;
}

static double
largest_e(Staircase *s)
{
    while (!heap_current(s, 0)) {
        s->heap_n--;
        s->heap_e[0] = s->heap_e[s->heap_n];
        s->heap_p[0] = s->heap_p[s->heap_n];
        heap_sift_down(s, 0);
    }
    return s->heap_e[0];
}

/* ---------------------------------------------------------------- points */

static int
grow(Staircase *s, Py_ssize_t cap)
{
    if (resize((void **)&s->r, cap, sizeof(double)) < 0 || resize((void **)&s->e, cap, sizeof(double)) < 0
            || resize((void **)&s->keys, cap, sizeof(PyObject *)) < 0
            || resize((void **)&s->block_min, cap / BLOCK, sizeof(double)) < 0)
        return -1;
    for (Py_ssize_t p = s->cap; p < cap; p++) {
        s->r[p] = 0.0;
        s->e[p] = HOLE;
        s->keys[p] = NULL;
    }
    for (Py_ssize_t b = s->cap / BLOCK; b < cap / BLOCK; b++)
        s->block_min[b] = HOLE;
    s->cap = cap;
    return 0;
}

static int
set_position(Staircase *s, PyObject *key, Py_ssize_t p)
{
    PyObject *where = PyLong_FromSsize_t(p);
    if (where == NULL)
        return -1;
    int failed = PyDict_SetItem(s->pos, key, where);
    Py_DECREF(where);
    return failed;
}

static void
put(Staircase *s, Py_ssize_t p, double r, double e)
{
    s->r[p] = r;
    s->e[p] = e;
    if (e < s->block_min[p / BLOCK])
        s->block_min[p / BLOCK] = e;
}

static Py_ssize_t
bisect_steps(const Staircase *s, Py_ssize_t p)
{
    Py_ssize_t lo = 0, hi = s->n_steps;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (s->steps[mid] < p)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* steps[i:j] = values[:count] */
static int
splice_steps(Staircase *s, Py_ssize_t i, Py_ssize_t j, const Py_ssize_t *values, Py_ssize_t count)
{
    Py_ssize_t size = s->n_steps - (j - i) + count;
    if (size > s->cap_steps) {
        Py_ssize_t cap = s->cap_steps ? s->cap_steps : 64;
        while (cap < size)
            cap *= 2;
        if (resize((void **)&s->steps, cap, sizeof(Py_ssize_t)) < 0)
            return -1;
        s->cap_steps = cap;
    }
    memmove(s->steps + i + count, s->steps + j, (size_t)(s->n_steps - j) * sizeof(Py_ssize_t));
    if (count)
        memcpy(s->steps + i, values, (size_t)count * sizeof(Py_ssize_t));
    s->n_steps = size;
    return 0;
}

/* the first position in [lo, hi) whose e <= threshold, or -1: O(n / BLOCK);
 * a block whose minimum says yes but holds no such position gets its true minimum */
static Py_ssize_t
first_at_most(Staircase *s, Py_ssize_t lo, Py_ssize_t hi, double threshold)
{
    const double *e = s->e;
    Py_ssize_t edge = (lo / BLOCK + 1) * BLOCK;
    if (edge > hi)
        edge = hi;
    for (Py_ssize_t i = lo; i < edge; i++)
        if (e[i] <= threshold)
            return i;
    while (edge < hi) {
        Py_ssize_t c = edge / BLOCK, last = (hi - 1) / BLOCK;
        while (c <= last && !(s->block_min[c] <= threshold))
            c++;
        if (c > last)
            return -1;
        Py_ssize_t start = c * BLOCK;
        edge = start + BLOCK < hi ? start + BLOCK : hi;
        for (Py_ssize_t i = start; i < edge; i++)
            if (e[i] <= threshold)
                return i;
        if (edge == start + BLOCK) {
            double least = HOLE;
            for (Py_ssize_t i = start; i < edge; i++)
                if (e[i] < least)
                    least = e[i];
            s->block_min[c] = least;
        }
    }
    return -1;
}

/* empty position p; the points it alone hid become steps */
static int
vacate(Staircase *s, Py_ssize_t p)
{
    s->e[p] = HOLE;   /* (its block's minimum stays a lower bound: mended when a search meets it) */
    Py_CLEAR(s->keys[p]);
    Py_ssize_t i = bisect_steps(s, p);
    if (i == s->n_steps || s->steps[i] != p)
        return 0;   /* hidden: it hid nothing that is not hidden still */
    double threshold = i ? s->e[s->steps[i - 1]] : TOP;
    Py_ssize_t end = i + 1 < s->n_steps ? s->steps[i + 1] : s->n;
    Py_ssize_t count = 0, cap = 0, *found = NULL;
    Py_ssize_t q = p + 1;
    for (;;) {
        q = first_at_most(s, q, end, threshold);
        if (q < 0)
            break;
        if (count == cap) {
            cap = cap ? 2 * cap : 16;
            if (resize((void **)&found, cap, sizeof(Py_ssize_t)) < 0)
                return -1;
        }
        found[count++] = q;
        threshold = s->e[q];
        q++;
    }
    int failed = splice_steps(s, i, i + 1, found, count);
    PyMem_Free(found);
    return failed;
}

/* lay the points out again at positions 0.. in the order of `order`: O(n) */
static int
rebuild(Staircase *s, const Py_ssize_t *order, Py_ssize_t count)
{
    Py_ssize_t size = 256;
    while (size < 2 * count + 1)
        size *= 2;   /* (as the Python twin sizes it: a power of two above twice the points) */
    double *r = PyMem_Malloc((size_t)size * sizeof(double)), *e = PyMem_Malloc((size_t)size * sizeof(double));
    PyObject **keys = PyMem_Malloc((size_t)size * sizeof(PyObject *));
    double *block_min = PyMem_Malloc((size_t)(size / BLOCK) * sizeof(double));
    Py_ssize_t *steps = PyMem_Malloc((size_t)size * sizeof(Py_ssize_t));
    double *heap_e = PyMem_Malloc((size_t)size * sizeof(double));
    Py_ssize_t *heap_p = PyMem_Malloc((size_t)size * sizeof(Py_ssize_t));
    if (!r || !e || !keys || !block_min || !steps || !heap_e || !heap_p) {
        PyMem_Free(r); PyMem_Free(e); PyMem_Free(keys); PyMem_Free(block_min);
        PyMem_Free(steps); PyMem_Free(heap_e); PyMem_Free(heap_p);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < size; i++) {
        r[i] = 0.0;
        e[i] = HOLE;
        keys[i] = NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        r[i] = s->r[order[i]];
        e[i] = s->e[order[i]];
        keys[i] = s->keys[order[i]];   /* (the reference moves) */
    }
    Py_ssize_t n_steps = 0;
    double running = TOP;
    for (Py_ssize_t i = 0; i < count; i++)
        if (e[i] <= running) {
            steps[n_steps++] = i;
            running = e[i];
        }
    for (Py_ssize_t b = 0; b < size / BLOCK; b++) {
        double least = HOLE;
        for (Py_ssize_t i = b * BLOCK; i < (b + 1) * BLOCK; i++)
            if (e[i] < least)
                least = e[i];
        block_min[b] = least;
    }
    PyMem_Free(s->r); PyMem_Free(s->e); PyMem_Free(s->keys); PyMem_Free(s->block_min);
    PyMem_Free(s->steps); PyMem_Free(s->heap_e); PyMem_Free(s->heap_p);
    s->r = r; s->e = e; s->keys = keys; s->block_min = block_min;
    s->steps = steps; s->n_steps = n_steps; s->cap_steps = size;
    s->heap_e = heap_e; s->heap_p = heap_p; s->heap_cap = size;
    s->n = count;
    s->cap = size;
    PyDict_Clear(s->pos);
    for (Py_ssize_t i = 0; i < count; i++)
        if (set_position(s, keys[i], i) < 0)
            return -1;
    heap_rebuild(s);
    s->last_r = count ? r[count - 1] : -INFINITY;
    return 0;
}

static int
live_positions(const Staircase *s, Py_ssize_t **out, Py_ssize_t *count)
{
    Py_ssize_t k = 0, *order = PyMem_Malloc((size_t)(live(s) + 1) * sizeof(Py_ssize_t));
    if (order == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t p = 0; p < s->n; p++)
        if (s->keys[p] != NULL)
            order[k++] = p;
    *out = order;
    *count = k;
    return 0;
}

static const Staircase *sorting;   /* (qsort has no context argument; set only while it runs) */

static int
by_r_then_position(const void *a, const void *b)
{
    Py_ssize_t x = *(const Py_ssize_t *)a, y = *(const Py_ssize_t *)b;
    double rx = sorting->r[x], ry = sorting->r[y];
    if (rx != ry)
        return rx < ry ? -1 : 1;
    return x < y ? -1 : (x > y);
}

/* lay the live points out again from position 0, in r order (ties: by position) when
   by_r, else as they lie; the holes go */
static int
relayout(Staircase *s, int by_r)
{
    Py_ssize_t *order, count;
    if (live_positions(s, &order, &count) < 0)
        return -1;
    if (by_r) {
        sorting = s;
        qsort(order, (size_t)count, sizeof(Py_ssize_t), by_r_then_position);
        sorting = NULL;
    }
    int failed = rebuild(s, order, count);
    PyMem_Free(order);
    return failed;
}

static int
keep_dense(Staircase *s)
{
    return s->n <= 2 * live(s) + 1024 ? 0 : relayout(s, 0);
}


/* put a point after every other one; if its r came before the last one's, sort again */
static int
at_end(Staircase *s, PyObject *key, double r, double e)
{
    Py_ssize_t p = s->n;
    if (p == s->cap && grow(s, 2 * s->cap) < 0)
        return -1;
    if (set_position(s, key, p) < 0)
        return -1;
    Py_INCREF(key);
    s->keys[p] = key;
    s->n++;
    put(s, p, r, e);
    if (r < s->last_r)
        return relayout(s, 1);
    if (!s->n_steps || e <= s->e[s->steps[s->n_steps - 1]]) {
        if (splice_steps(s, s->n_steps, s->n_steps, &p, 1) < 0)
            return -1;
    }
    s->last_r = r;
    return remember(s, e, p);
}

static Py_ssize_t
position_of(Staircase *s, PyObject *key)
{
    PyObject *where = PyDict_GetItemWithError(s->pos, key);
    if (where == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetObject(PyExc_KeyError, key);
        return -1;
    }
    return PyLong_AsSsize_t(where);
}

/* ---------------------------------------------------------------- methods */

static PyObject *
Staircase_append(Staircase *s, PyObject *args)
{
    PyObject *key;
    double r, e;
    if (!PyArg_ParseTuple(args, "Odd:append", &key, &r, &e))
        return NULL;
    int present = PyDict_Contains(s->pos, key);
    if (present < 0)
        return NULL;
    if (present)
        return PyErr_Format(PyExc_KeyError, "%R is already a point", key);
    if (at_end(s, key, r, e) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Staircase_move(Staircase *s, PyObject *args)
{
    PyObject *key;
    double r;
    if (!PyArg_ParseTuple(args, "Od:move", &key, &r))
        return NULL;
    Py_ssize_t p = position_of(s, key);
    if (p < 0)
        return NULL;
    double e = s->e[p];
    Py_INCREF(key);   /* (vacate lets go of the point's reference) */
    int failed = PyDict_DelItem(s->pos, key) < 0 || vacate(s, p) < 0 || at_end(s, key, r, e) < 0
                 || keep_dense(s) < 0;
    Py_DECREF(key);
    if (failed)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Staircase_remove(Staircase *s, PyObject *key)
{
    Py_ssize_t p = position_of(s, key);
    if (p < 0 || PyDict_DelItem(s->pos, key) < 0 || vacate(s, p) < 0 || keep_dense(s) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Staircase_change(Staircase *s, PyObject *args)
{
    PyObject *key;
    double e;
    if (!PyArg_ParseTuple(args, "Od:change", &key, &e))
        return NULL;
    Py_ssize_t p = position_of(s, key);
    if (p < 0)
        return NULL;
    if (s->e[p] == e)
        Py_RETURN_NONE;
    if (vacate(s, p) < 0)
        return NULL;
    Py_INCREF(key);
    s->keys[p] = key;
    put(s, p, s->r[p], e);
    if (remember(s, e, p) < 0)
        return NULL;
    Py_ssize_t i = bisect_steps(s, p);
    if (i == 0 || e <= s->e[s->steps[i - 1]]) {   /* a step now: it hides the later steps above it */
        Py_ssize_t j = i;
        while (j < s->n_steps && s->e[s->steps[j]] > e)
            j++;
        if (splice_steps(s, i, j, &p, 1) < 0)
            return NULL;
    }
    if (keep_dense(s) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
Staircase_steps(Staircase *s, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = PyList_New(s->n_steps);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < s->n_steps; i++) {
        Py_ssize_t p = s->steps[i];
        PyObject *item = Py_BuildValue("(ddO)", s->r[p], s->e[p], s->keys[p]);
        if (item == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, item);
    }
    return out;
}

/* (min r, max r, min e, max e) over the points, of which there must be one */
static void
bounds(Staircase *s, double *low_r, double *high_r, double *low_e, double *high_e)
{
    Py_ssize_t last = s->n - 1;
    while (s->keys[last] == NULL)
        last--;
    *low_r = s->r[s->steps[0]];
    *high_r = s->r[last];
    *low_e = s->e[s->steps[s->n_steps - 1]];
    *high_e = largest_e(s);
}

static PyObject *
Staircase_bounds(Staircase *s, PyObject *Py_UNUSED(ignored))
{
    if (!live(s)) {
        PyErr_SetString(PyExc_IndexError, "the staircase has no points");
        return NULL;
    }
    double low_r, high_r, low_e, high_e;
    bounds(s, &low_r, &high_r, &low_e, &high_e);
    return Py_BuildValue("(dddd)", low_r, high_r, low_e, high_e);
}

static PyObject *
Staircase_least(Staircase *s, PyObject *arg)
{
    double alpha = PyFloat_AsDouble(arg);
    if (alpha == -1.0 && PyErr_Occurred())
        return NULL;
    if (!live(s))
        Py_RETURN_NONE;
    double low_r, high_r, low_e, high_e;
    bounds(s, &low_r, &high_r, &low_e, &high_e);
    double span_r = high_r - low_r, span_e = high_e - low_e;
    Py_ssize_t best = -1;
    double best_score = 0.0;
    for (Py_ssize_t i = 0; i < s->n_steps; i++) {
        Py_ssize_t p = s->steps[i];
        /* as numpy evaluates (r - lo) / span + alpha * ((e - lo) / span), each step rounded */
        double recency = span_r > 0 ? (s->r[p] - low_r) / span_r : 0.0;
        double efficiency = span_e > 0 ? (s->e[p] - low_e) / span_e : 0.0;
        double weighted = alpha * efficiency;
        double score = recency + weighted;
        int better = best < 0 || score < best_score;
        if (!better && score == best_score) {   /* ties: the older last use, then the smaller key */
            if (s->r[p] != s->r[best])
                better = s->r[p] < s->r[best];
            else {
                better = key_less(s->keys[p], s->keys[best]);
                if (better < 0)
                    return NULL;
            }
        }
        if (better) {
            best = p;
            best_score = score;
        }
    }
    return Py_NewRef(s->keys[best]);
}

static PyObject *
fail_check(const char *what)
{
    PyErr_Format(PyExc_AssertionError, "staircase: %s", what);
    return NULL;
}

static PyObject *
Staircase_check(Staircase *s, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t count = 0, k = 0;
    double running = TOP, previous_r = -INFINITY;
    for (Py_ssize_t p = 0; p < s->n; p++) {
        if (s->keys[p] == NULL) {
            if (s->e[p] != HOLE)
                return fail_check("a hole with an e");
            continue;
        }
        count++;
        Py_ssize_t where = position_of(s, s->keys[p]);
        if (where < 0)
            return NULL;
        if (where != p)
            return fail_check("a key whose position is another");
        if (s->r[p] < previous_r)
            return fail_check("r out of order");
        previous_r = s->r[p];
        if (s->e[p] <= running) {
            if (k >= s->n_steps || s->steps[k] != p)
                return fail_check("a running minimum that is not a step");
            k++;
            running = s->e[p];
        }
    }
    if (k != s->n_steps)
        return fail_check("a step that is not a running minimum");
    if (count != live(s))
        return fail_check("points and keys differ in number");
    for (Py_ssize_t b = 0; b < s->cap / BLOCK; b++)
        for (Py_ssize_t p = b * BLOCK; p < (b + 1) * BLOCK; p++)
            if (s->e[p] < s->block_min[b])
                return fail_check("a block minimum above a point of its block");
    char *seen = PyMem_Calloc((size_t)s->n + 1, 1);
    if (seen == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < s->heap_n; i++) {
        if (heap_current(s, i))
            seen[s->heap_p[i]] = 1;
        if (i && s->heap_e[(i - 1) / 2] < s->heap_e[i]) {
            PyMem_Free(seen);
            return fail_check("the heap of e out of order");
        }
    }
    for (Py_ssize_t p = 0; p < s->n; p++)
        if (s->keys[p] != NULL && !seen[p]) {
            PyMem_Free(seen);
            return fail_check("a point the heap of e does not hold");
        }
    PyMem_Free(seen);
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------- the type */

static int
Staircase_init(Staircase *s, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, ":Staircase", names))
        return -1;
    if (s->pos != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Staircase is already initialised");
        return -1;
    }
    s->pos = PyDict_New();
    if (s->pos == NULL || grow(s, 256) < 0)
        return -1;
    s->last_r = -INFINITY;
    return 0;
}

static int
ready(const Staircase *s)
{
    if (s->pos != NULL)
        return 0;
    PyErr_SetString(PyExc_RuntimeError, "Staircase.__init__ was not called");
    return -1;
}

static void
Staircase_dealloc(Staircase *s)
{
    for (Py_ssize_t p = 0; p < s->n; p++)
        Py_XDECREF(s->keys[p]);
    Py_XDECREF(s->pos);
    PyMem_Free(s->r); PyMem_Free(s->e); PyMem_Free(s->keys); PyMem_Free(s->block_min);
    PyMem_Free(s->steps); PyMem_Free(s->heap_e); PyMem_Free(s->heap_p);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static Py_ssize_t
Staircase_len(Staircase *s)
{
    return live(s);
}

static int
Staircase_contains(Staircase *s, PyObject *key)
{
    return s->pos == NULL ? 0 : PyDict_Contains(s->pos, key);
}

/* every method checks __init__ ran first */
#define GUARDED(name, kind, ...)                                   \
    static PyObject *name##_guarded(Staircase *s, kind arg) {      \
        if (ready(s) < 0) return NULL;                             \
        return name(s, arg);                                       \
    }
GUARDED(Staircase_append, PyObject *)
GUARDED(Staircase_move, PyObject *)
GUARDED(Staircase_remove, PyObject *)
GUARDED(Staircase_change, PyObject *)
GUARDED(Staircase_steps, PyObject *)
GUARDED(Staircase_bounds, PyObject *)
GUARDED(Staircase_least, PyObject *)
GUARDED(Staircase_check, PyObject *)

static PyMethodDef Staircase_methods[] = {
    {"append", (PyCFunction)Staircase_append_guarded, METH_VARARGS, "append(key, r, e): a point with the largest r so far"},
    {"move", (PyCFunction)Staircase_move_guarded, METH_VARARGS, "move(key, r): a new, largest r for key's point"},
    {"remove", (PyCFunction)Staircase_remove_guarded, METH_O, "remove(key): take key's point out"},
    {"change", (PyCFunction)Staircase_change_guarded, METH_VARARGS, "change(key, e): a new e, same r and place"},
    {"steps", (PyCFunction)Staircase_steps_guarded, METH_NOARGS, "steps(): (r, e, key) of every step, in r order"},
    {"bounds", (PyCFunction)Staircase_bounds_guarded, METH_NOARGS, "bounds(): (min r, max r, min e, max e)"},
    {"least", (PyCFunction)Staircase_least_guarded, METH_O, "least(alpha): the key of the least normalised score"},
    {"_check", (PyCFunction)Staircase_check_guarded, METH_NOARGS, "assert the invariants"},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Staircase_as_sequence = {
    .sq_length = (lenfunc)Staircase_len,
    .sq_contains = (objobjproc)Staircase_contains,
};

static PyTypeObject StaircaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "policies._staircase.Staircase",
    .tp_doc = PyDoc_STR("The Pareto staircase of points (r, e); see policies/staircase.py."),
    .tp_basicsize = sizeof(Staircase),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Staircase_init,
    .tp_dealloc = (destructor)Staircase_dealloc,
    .tp_methods = Staircase_methods,
    .tp_as_sequence = &Staircase_as_sequence,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_staircase",
    .m_doc = "The compiled twin of policies/staircase.py.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__staircase(void)
{
    if (PyType_Ready(&StaircaseType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Staircase", (PyObject *)&StaircaseType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

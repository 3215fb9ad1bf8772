"""The inspected batches in a database (SQLAlchemy): a batch and its images, overlays included, so the operator
page shows the history after a restart. SQLite file by default, PostgreSQL by URL.

Each batch commits in one transaction with its images: a failed write leaves nothing of it behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, ForeignKey, LargeBinary, Text, case, create_engine, event, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, selectinload, sessionmaker

if TYPE_CHECKING:
    from polydefect.export.runtime import BatchResult

SQLITE_BUSY_MS = 30_000  # how long a SQLite writer waits for another one (other threads, a second server)


class Base(DeclarativeBase):
    pass


class BatchRow(Base):
    """One uploaded batch and its SPC verdict (None where nQI was not computed: see `note`)."""

    __tablename__ = "batches"

    id: Mapped[int] = mapped_column(primary_key=True)
    received: Mapped[datetime]  # UTC, stored without a zone: SQLite keeps none
    label: Mapped[str]  # unbounded text (VARCHAR without a length) on every backend, as are the names below
    run_id: Mapped[str]  # the bundle's run: limits and thresholds came from it
    out_of_control: Mapped[bool | None]
    views_out: Mapped[int | None]
    note: Mapped[str] = mapped_column(Text)
    scoring_seconds: Mapped[float]
    images: Mapped[list[ImageRow]] = relationship(back_populates="batch", order_by="ImageRow.position")


class ImageRow(Base):
    """One image of a batch: its score and verdict, its view's nQI, and its overlay PNG (loaded only on demand)."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    position: Mapped[int]  # upload order
    name: Mapped[str]
    view: Mapped[str]
    score: Mapped[float]
    threshold: Mapped[float]
    anomalous: Mapped[bool]
    map_sum: Mapped[float]
    nqi: Mapped[float | None]
    ucl: Mapped[float | None]
    out_of_control: Mapped[bool | None]
    overlay_png: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    batch: Mapped[BatchRow] = relationship(back_populates="images")


@dataclass(frozen=True)
class BatchSummary:
    """A row of the batch list: the batch's verdict and how many of its images were flagged."""

    id: int
    received: datetime
    label: str
    out_of_control: bool | None
    views_out: int | None
    images: int
    flagged: int


@dataclass(frozen=True)
class ControlPoint:
    """One view's nQI in one stored batch, with the limit it was judged against."""

    batch_id: int
    view: str
    nqi: float
    ucl: float
    out_of_control: bool


@dataclass(frozen=True)
class Totals:
    """What /metrics reports, counted over the whole database (so it survives restarts)."""

    batches: int
    batches_out_of_control: int
    images: int
    images_flagged: int
    mean_scoring_seconds: float


def make_engine(url: str) -> Engine:
    """An engine for `url`; a SQLite file gets its folder, write-ahead logging (readers do not block the writer)
    and a busy timeout (concurrent writers wait instead of failing)."""
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        if engine.url.database and engine.url.database != ":memory:":
            Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)

        @event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine


class Store:
    """The batches of one database; safe to share between threads (a session per call)."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        Base.metadata.create_all(self.engine)
        self.session = sessionmaker(self.engine, expire_on_commit=False)

    def describe(self) -> str:
        """The database URL with any password hidden, for logs."""
        return self.engine.url.render_as_string(hide_password=True)

    def add_batch(self, result: BatchResult, label: str, run_id: str, seconds: float) -> BatchRow:
        """Store a scored batch and its images in one transaction; returns it with its images (ids set)."""
        batch = BatchRow(
            received=datetime.now(UTC).replace(tzinfo=None),
            label=label,
            run_id=run_id,
            out_of_control=result.out_of_control,
            views_out=result.views_out,
            note=result.note,
            scoring_seconds=seconds,
        )
        batch.images = [
            ImageRow(
                position=position,
                name=image.name,
                view=image.view,
                score=image.score,
                threshold=image.threshold,
                anomalous=image.anomalous,
                map_sum=image.map_sum,
                nqi=image.nqi,
                ucl=image.ucl,
                out_of_control=image.out_of_control,
                overlay_png=image.overlay_png,
            )
            for position, image in enumerate(result.images)
        ]
        with self.session.begin() as session:
            session.add(batch)
        return batch

    def batch(self, batch_id: int) -> BatchRow | None:
        """A stored batch with its images (without their overlays), or None."""
        with self.session() as session:
            query = select(BatchRow).where(BatchRow.id == batch_id).options(selectinload(BatchRow.images))
            return session.scalars(query).one_or_none()

    def summaries(self, limit: int) -> list[BatchSummary]:
        """The newest `limit` batches, newest first, with their image and flagged counts."""
        flagged = func.coalesce(func.sum(case((ImageRow.anomalous, 1), else_=0)), 0)
        query = (
            select(BatchRow, func.count(ImageRow.id), flagged)
            .outerjoin(ImageRow)
            .group_by(BatchRow.id)
            .order_by(BatchRow.id.desc())
            .limit(limit)
        )
        with self.session() as session:
            return [
                BatchSummary(b.id, b.received, b.label, b.out_of_control, b.views_out, int(n), int(f))
                for b, n, f in session.execute(query)
            ]

    def control_points(self, last: int) -> list[ControlPoint]:
        """Each view's nQI over the newest `last` batches that have one, oldest first."""
        newest = (
            select(BatchRow.id).where(BatchRow.out_of_control.is_not(None)).order_by(BatchRow.id.desc()).limit(last)
        )
        query = (
            select(ImageRow.batch_id, ImageRow.view, ImageRow.nqi, ImageRow.ucl, ImageRow.out_of_control)
            .where(ImageRow.batch_id.in_(newest.scalar_subquery()), ImageRow.nqi.is_not(None))
            .order_by(ImageRow.batch_id, ImageRow.position)
        )
        with self.session() as session:
            return [ControlPoint(*row) for row in session.execute(query)]

    def overlay(self, image_id: int) -> bytes | None:
        """An image's overlay PNG, or None where there is no such image."""
        with self.session() as session:
            return session.scalar(select(ImageRow.overlay_png).where(ImageRow.id == image_id))

    def count(self) -> int:
        """How many batches are stored (a cheap query: /health runs it to prove the database answers)."""
        with self.session() as session:
            return session.scalar(select(func.count(BatchRow.id))) or 0

    def totals(self) -> Totals:
        with self.session() as session:
            batches, out, seconds = session.execute(
                select(
                    func.count(BatchRow.id),
                    func.coalesce(func.sum(case((BatchRow.out_of_control, 1), else_=0)), 0),
                    func.coalesce(func.avg(BatchRow.scoring_seconds), 0.0),
                )
            ).one()
            images, flagged = session.execute(
                select(func.count(ImageRow.id), func.coalesce(func.sum(case((ImageRow.anomalous, 1), else_=0)), 0))
            ).one()
        return Totals(int(batches), int(out), int(images), int(flagged), float(seconds))

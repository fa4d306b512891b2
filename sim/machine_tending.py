"""The `machine-tending` task: open a machine's door, load a part into its fixture, close the door.

The task's randomisation ranges, instructions and success criterion live here as module
constants; the environment class below documents the observation and action layout.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

from robota.sim import twin
from robota.sim.twin import TwinEnv, build_manual

DEFAULT_MAX_EPISODE_STEPS = 200

# The scene's part, fixture and door, in metres (see assets/machine_tending.xml).
PART_HALF_SIZE_M = 0.02
NEST_FLOOR_TOP_M = 0.04
NEST_INNER_HALF_SIZE_M = 0.03
DOOR_TRAVEL_M = 0.18
# The door's handle: its top above the table and its size along the slide.
HANDLE_TOP_M = 0.161
HANDLE_THICKNESS_M = 0.04

# Drawn from the episode's seed in this order: instruction, part x, part y, part yaw, door start
# opening, arm joint offsets. The box is symmetric under quarter turns, so +-pi/4 covers every
# yaw. The door starts closed or ajar by up to 10 mm. An open gripper centred on the closed
# handle position still straddles the handle there, with 12 mm to spare.
PART_X_RANGE_M = (0.35, 0.55)
PART_Y_RANGE_M = (-0.25, -0.05)
PART_YAW_RANGE_RAD = (-np.pi / 4, np.pi / 4)
DOOR_START_RANGE_M = (0.0, 0.01)

# Success needs the part's centre inside the nest: within the inner half size minus the part's
# half size, plus 2 mm for a part turned a little. The part must rest on the nest floor rather
# than on a rim, move slower than SUCCESS_MAX_PART_SPEED_M_S and be free of the fingers. The door
# must be closed to within DOOR_CLOSED_TOLERANCE_M.
SUCCESS_MAX_OFFSET_M = NEST_INNER_HALF_SIZE_M - PART_HALF_SIZE_M + 0.002
SUCCESS_MAX_PART_Z_M = NEST_FLOOR_TOP_M + PART_HALF_SIZE_M + 0.004
SUCCESS_MAX_PART_SPEED_M_S = 0.05
DOOR_CLOSED_TOLERANCE_M = 0.005

INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "en": (
        "Load the part into the machine and close the door.",
        "Open the door, put the part in the fixture, close the door.",
        "Tend the machine: load the part, then shut the door.",
    ),
    "de": (
        "Lege das Teil in die Maschine und schließe die Tür.",
        "Tür öffnen, Teil in die Aufnahme legen, Tür schließen.",
    ),
    "fr": (
        "Charge la pièce dans la machine et ferme la porte.",
        "Ouvre la porte, place la pièce, referme la porte.",
    ),
    "es": (
        "Carga la pieza en la máquina y cierra la puerta.",
        "Abre la puerta, coloca la pieza y cierra la puerta.",
    ),
    "it": (
        "Carica il pezzo nella macchina e chiudi la porta.",
        "Apri la porta, metti il pezzo e chiudi la porta.",
    ),
    "pl": (
        "Włóż detal do maszyny i zamknij drzwi.",
        "Otwórz drzwi, włóż część do uchwytu, zamknij drzwi.",
    ),
}
twin.check_instructions("machine-tending", INSTRUCTIONS)


class MachineTendingEnv(TwinEnv):
    """Machine-tending environment. `build_manual` replaces this line with the generated manual."""

    task_name = "machine-tending"
    scene_xml = "machine_tending.xml"
    object_bodies = ("part", "door")
    instructions = INSTRUCTIONS
    default_max_episode_steps = DEFAULT_MAX_EPISODE_STEPS

    def _index_task(self) -> None:
        door = self.model.joint("door")
        self.door_qpos = int(door.qposadr[0])
        self.door_qvel = int(door.dofadr[0])
        # World positions of the fixed geometry, from forward kinematics at the model's qpos0
        # (door closed) in scratch data.
        data = mujoco.MjData(self.model)
        mujoco.mj_kinematics(self.model, data)
        self.nest_center_m = data.xpos[self.model.body("fixture").id, :2].copy()
        # The handle's centre with the door closed, in the world frame.
        self.handle_closed_m = data.geom_xpos[self.model.geom("door_handle").id].copy()

    def door_opening_m(self) -> float:
        """Return how far the door has slid open (m); 0 is closed."""
        return float(self.data.qpos[self.door_qpos])

    def _reset_task(self) -> dict[str, Any]:
        part_x = self.np_random.uniform(*PART_X_RANGE_M)
        part_y = self.np_random.uniform(*PART_Y_RANGE_M)
        part_yaw = self.np_random.uniform(*PART_YAW_RANGE_RAD)
        door_start = self.np_random.uniform(*DOOR_START_RANGE_M)
        self._set_free_body(self.index.part_qpos, np.array([part_x, part_y, PART_HALF_SIZE_M]), part_yaw)
        self.data.qpos[self.door_qpos] = door_start
        return {
            "part_x_m": float(part_x),
            "part_y_m": float(part_y),
            "part_yaw_rad": float(part_yaw),
            "door_start_opening_m": float(door_start),
        }

    def part_in_fixture(self) -> bool:
        """Return whether the part rests on the nest floor, inside its rims, free of the fingers."""
        position, _ = self.index.part_pose_world(self.data)
        offset = np.abs(position[:2] - self.nest_center_m)
        inside = bool(np.all(offset < SUCCESS_MAX_OFFSET_M))
        seated = position[2] < SUCCESS_MAX_PART_Z_M
        speed = np.linalg.norm(self.data.qvel[self.index.part_qvel : self.index.part_qvel + 3])
        resting = speed < SUCCESS_MAX_PART_SPEED_M_S
        return inside and seated and resting and not self.index.part_touches_fingers(self.data)

    def is_success(self) -> bool:
        """Return whether the part rests in the fixture, released, with the door closed."""
        return self.part_in_fixture() and self.door_opening_m() < DOOR_CLOSED_TOLERANCE_M


_DETAILS = f"""## Scene

A machine enclosure stands on the table: 0.24 m x 0.38 m, 0.10 m high, centred at (0.42, 0.29) m.
Its roof has a 0.16 m square opening centred at (0.42, 0.20) m, which a sliding door (a 0.18 m
square plate) covers when closed. The door slides along +y by up to {DOOR_TRAVEL_M} m on a damped
slide joint `door` (position 0 is closed). Its red handle is 0.08 m wide,
{HANDLE_THICKNESS_M} m thick along the slide and rises to {HANDLE_TOP_M} m above the table. Under
the opening stands the fixture: a pedestal whose nest floor is {NEST_FLOOR_TOP_M} m high, with an
inner footprint of {2 * NEST_INNER_HALF_SIZE_M:.2f} m square and 6 mm rims.

Every episode draws the part, a 4 cm box of 0.1 kg on the table, at
x ~ U({PART_X_RANGE_M[0]:g}, {PART_X_RANGE_M[1]:g}) m,
y ~ U({PART_Y_RANGE_M[0]:g}, {PART_Y_RANGE_M[1]:g}) m and yaw ~ U(-pi/4, pi/4), and the door's
start opening ~ U({DOOR_START_RANGE_M[0]:g}, {DOOR_START_RANGE_M[1]:g}) m. `info["randomization"]`
records them as `part_x_m`, `part_y_m`, `part_yaw_rad` and `door_start_opening_m`. The machine
itself stays in place. Domain randomisation's object draws (mass, friction, colour) apply to the
part and the door.

The vision system reports the part pose only; the door's position is not observed. It shows in
the images and in what the arm feels through the wrist force/torque sensor.

## Reward, termination and truncation

Sparse: 1.0 on the step that succeeds, 0.0 otherwise. Success means all of:

- the part centre lies within {SUCCESS_MAX_OFFSET_M * 1000:.0f} mm of the nest centre along x and y;
- it is lower than {SUCCESS_MAX_PART_Z_M:.3f} m, so it sits on the nest floor, not on a rim;
- it moves slower than {SUCCESS_MAX_PART_SPEED_M_S} m/s and no finger touches it;
- the door is open by less than {DOOR_CLOSED_TOLERANCE_M * 1000:.0f} mm.

`terminated` is True on success; `truncated` is True once `max_episode_steps` steps have passed
without success. `info["is_success"]` repeats the success flag.

## Version history

- v0: first version."""

MachineTendingEnv.__doc__ = build_manual(
    MachineTendingEnv,
    "Open a machine's sliding door, load a part into the fixture inside and close the door",
    _DETAILS,
    "robota/MachineTending-v0",
)
